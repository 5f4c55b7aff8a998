package transport

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testIdentity makes a deterministic identity from seed.
func testIdentity(t testing.TB, seed byte) *Identity {
	t.Helper()
	var s [32]byte
	s[0] = seed
	id, err := GenerateIdentity(rand.NewChaCha8(s))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestIdentityDeterministic(t *testing.T) {
	a, b, c := testIdentity(t, 1), testIdentity(t, 1), testIdentity(t, 2)
	if a.NodeID() != b.NodeID() || !bytes.Equal(a.Certificate(), b.Certificate()) {
		t.Fatal("same seed gave different identities or certificates")
	}
	if a.NodeID() == c.NodeID() {
		t.Fatal("different seeds gave the same NodeID")
	}
	if got := NodeIDFromPublicKey(a.PublicKey()); got != a.NodeID() {
		t.Fatalf("NodeID %s, recomputed %s", a.NodeID(), got)
	}
	// The certificate verifies as self-signed ed25519 and carries the key.
	pub, err := verifyPeer([][]byte{a.Certificate()})
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(a.PublicKey()) {
		t.Fatal("certificate carries another key")
	}
}

func TestNodeIDStringRoundTrip(t *testing.T) {
	id := testIdentity(t, 3).NodeID()
	s := id.String()
	if len(s) != 32 {
		t.Fatalf("String %q has %d chars, want 32", s, len(s))
	}
	got, err := ParseNodeID(s)
	if err != nil || got != id {
		t.Fatalf("ParseNodeID(%q) = %v, %v", s, got, err)
	}
	for _, bad := range []string{"", "abc", strings.Repeat("z", 32), s + "00"} {
		if _, err := ParseNodeID(bad); err == nil {
			t.Errorf("ParseNodeID(%q) succeeded", bad)
		}
	}
}

func TestKeyFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.key")
	id := testIdentity(t, 4)
	if err := id.SaveKey(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	got, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.NodeID() != id.NodeID() || !bytes.Equal(got.Certificate(), id.Certificate()) {
		t.Fatal("loaded identity differs")
	}
	// LoadOrCreateKey loads the existing file and creates a missing one.
	again, err := LoadOrCreateKey(path, rand.NewChaCha8([32]byte{9}))
	if err != nil || again.NodeID() != id.NodeID() {
		t.Fatalf("LoadOrCreateKey on existing file: %v, %v", again, err)
	}
	fresh := filepath.Join(dir, "fresh.key")
	made, err := LoadOrCreateKey(fresh, rand.NewChaCha8([32]byte{9}))
	if err != nil {
		t.Fatal(err)
	}
	reloaded, err := LoadKey(fresh)
	if err != nil || reloaded.NodeID() != made.NodeID() {
		t.Fatalf("created key does not reload: %v", err)
	}
}

func TestLoadKeyErrors(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.NewChaCha8([32]byte{1}))
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	good, err := testIdentity(t, 5).MarshalKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, data, want string
	}{
		{"empty", "", "no PEM block"},
		{"garbage", "hello world", "no PEM block"},
		{"wrong-pem-type", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})), "PEM type"},
		{"bad-der", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})), "bad key file"},
		{"ecdsa", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})), "want ed25519"},
		{"trailing", string(good) + "junk", "trailing data"},
	}
	dir := t.TempDir()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".key")
			if err := os.WriteFile(path, []byte(tc.data), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadKey(path)
			if !errors.Is(err, ErrKeyFile) {
				t.Fatalf("err = %v, want ErrKeyFile", err)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %q should name %s and say %q", err, path, tc.want)
			}
		})
	}
	if _, err := LoadKey(filepath.Join(dir, "missing.key")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: err = %v, want ErrNotExist", err)
	}
}
