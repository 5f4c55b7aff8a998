package client

import (
	"crypto/ed25519"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/cohortlab/cohort/transport"
)

// TestDialRefusesBadAddresses: an address a client could never reach is refused at once, naming
// the address and what is wrong, instead of being retried until the timeout.
func TestDialRefusesBadAddresses(t *testing.T) {
	id := testIdentity(t, "alice")
	for _, tc := range []struct {
		addrs []string
		want  string // "" = accepted
	}{
		{[]string{"127.0.0.1:7001"}, ""},
		{[]string{"localhost:7001", "[::1]:7002"}, ""},
		{[]string{"127.0.0.1"}, `"127.0.0.1": want HOST:PORT`},
		{[]string{"127.0.0.1:7001", "10.0.0.2"}, `"10.0.0.2": want HOST:PORT`},
		{[]string{":7001"}, "no host"},
		{[]string{"127.0.0.1:http"}, `port "http" is not a number`},
		{[]string{"127.0.0.1:0"}, `port "0"`},
		{[]string{"127.0.0.1:70000"}, `port "70000"`},
		{[]string{"127.0.0.1:-1"}, `port "-1"`},
	} {
		start := time.Now()
		cl, err := Dial(Config{Addrs: tc.addrs, Identity: id})
		if cl != nil {
			cl.Close()
		}
		if tc.want == "" {
			if err != nil {
				t.Errorf("%v: %v", tc.addrs, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.addrs, err, tc.want)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%v: refused after %s, want at once", tc.addrs, d)
		}
	}
	if _, err := Dial(Config{Addrs: []string{"127.0.0.1:7001"}, Identity: id, Timeout: -time.Second}); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Errorf("negative timeout: %v", err)
	}
}

func testIdentity(t *testing.T, name string) *transport.Identity {
	seed := sha256.Sum256([]byte(name))
	id, err := transport.NewIdentity(ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	return id
}
