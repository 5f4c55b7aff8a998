package consensus

import (
	"crypto/ed25519"
	"crypto/sha256"
	"testing"
)

// testKey derives a deterministic key from a name: ed25519.NewKeyFromSeed(sha256(name)).
func testKey(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(name))
	return ed25519.NewKeyFromSeed(seed[:])
}

func testID(name string) string { return IDOf(testKey(name).Public().(ed25519.PublicKey)) }

func testPub(name string) []byte { return []byte(testKey(name).Public().(ed25519.PublicKey)) }

// mustEnv signs body with name's key.
func mustEnv(t testing.TB, name string, req uint64, body Body) Envelope {
	t.Helper()
	env, err := NewEnvelope(testKey(name), req, body)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// mustApply applies a signed command at time now and fails the test on error.
func mustApply(t testing.TB, s *State, now int64, name string, req uint64, body Body) Result {
	t.Helper()
	res, err := s.Apply(Command{Version: Version, Time: now, Env: mustEnv(t, name, req, body)})
	if err != nil {
		t.Fatalf("%s %s req %d: %v", name, body.Type(), req, err)
	}
	return res
}
