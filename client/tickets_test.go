package client

import "testing"

func TestTicketCachePerCertificate(t *testing.T) {
	var tc ticketCache
	a := tc.forCertificate("1")
	if tc.forCertificate("1") != a {
		t.Error("the same certificate got a new cache")
	}
	b := tc.forCertificate("2")
	if b == a {
		t.Error("a renewed certificate kept the tickets of the old one")
	}
	if tc.forCertificate("2") != b {
		t.Error("the renewed certificate's cache was not kept")
	}
}
