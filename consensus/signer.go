package consensus

import (
	"crypto/ed25519"
	"sync/atomic"
)

// Signer signs command bodies with one key and increasing request IDs. It is safe for concurrent
// use. Keep the returned Envelope to retry it unchanged: a retry must reuse the request ID.
type Signer struct {
	key  ed25519.PrivateKey
	id   string
	last atomic.Uint64
}

// NewSigner returns a Signer whose first request ID is after+1. Request IDs must not be reused
// across restarts, so pick after from something that only grows, e.g. the larger of
// State.LastRequestID(id) and the wall clock in nanoseconds at start-up (the caller's clock, not
// the state's).
func NewSigner(key ed25519.PrivateKey, after uint64) (*Signer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errf(ErrInvalid, "private key is %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	s := &Signer{key: key, id: IDOf(key.Public().(ed25519.PublicKey))}
	s.last.Store(after)
	return s, nil
}

// ID returns the issuer ID (IDOf the public key).
func (s *Signer) ID() string { return s.id }

// PublicKey returns the signer's public key.
func (s *Signer) PublicKey() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// Sign encodes and signs body under the next request ID.
func (s *Signer) Sign(body Body) (Envelope, error) {
	return NewEnvelope(s.key, s.last.Add(1), body)
}
