package oidctest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
)

// The provider's login pages, as a user fills them in a browser. Tests that
// are not about the browser use these; the e2e tests drive Chromium.

var hiddenID = regexp.MustCompile(`name="id" value="([^"]*)"`)

// browser returns an HTTP client with a cookie jar that trusts the provider
// and does not follow a redirect to stopAt's prefix.
func (p *Provider) browser(stopAt string) *http.Client {
	c := p.HTTPClient()
	jar, _ := cookiejar.New(nil)
	c.Jar = jar
	c.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if stopAt != "" && strings.HasPrefix(req.URL.String(), stopAt) {
			return http.ErrUseLastResponse
		}
		return nil
	}
	return c
}

// LoginCode opens authURL (an authorization request), signs in as email and
// returns the URL the provider redirects to (redirectURI?code=…&state=…),
// without following it.
func (p *Provider) LoginCode(ctx context.Context, authURL, redirectURI, email, password string) (*url.URL, error) {
	b := p.browser(redirectURI)
	page, _, err := get(ctx, b, authURL)
	if err != nil {
		return nil, err
	}
	m := hiddenID.FindStringSubmatch(page)
	if m == nil {
		return nil, fmt.Errorf("no login form: %.200s", page)
	}
	form := url.Values{"id": {m[1]}, "username": {email}, "password": {password}}
	resp, err := post(ctx, b, p.Issuer+"login/username", form)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode/100 != 3 || !strings.HasPrefix(loc, redirectURI) {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("login as %s: status %d, location %q: %.300s", email, resp.StatusCode, loc, body)
	}
	return url.Parse(loc)
}

// LoginDevice enters userCode on the device page, signs in as email and
// allows (or denies) the device.
func (p *Provider) LoginDevice(ctx context.Context, userCode, email, password string, allow bool) error {
	b := p.browser("")
	form := url.Values{"user_code": {userCode}, "username": {email}, "password": {password}}
	resp, err := post(ctx, b, p.Issuer+"device/login", form)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	if !strings.Contains(string(body), "confirm?action=allowed") {
		return fmt.Errorf("device login as %s refused: %.300s", email, body)
	}
	action := "denied"
	if allow {
		action = "allowed"
	}
	page, final, err := get(ctx, b, p.Issuer+"device/confirm?action="+action)
	if err != nil {
		return err
	}
	if strings.Contains(final, "prompt=") {
		return fmt.Errorf("device confirmation failed: %s", final)
	}
	_ = page
	return nil
}

func get(ctx context.Context, c *http.Client, u string) (string, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return "", "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("GET %s: %s: %.200s", u, resp.Status, b)
	}
	return string(b), resp.Request.URL.String(), nil
}

func post(ctx context.Context, c *http.Client, u string, form url.Values) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	if resp == nil {
		return nil, errors.New("no response")
	}
	return resp, nil
}
