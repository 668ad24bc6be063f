package browsertest

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
)

// spkiHash is Chromium's --ignore-certificate-errors-spki-list form of a
// certificate: base64 of the SHA-256 of its SubjectPublicKeyInfo.
func spkiHash(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}
