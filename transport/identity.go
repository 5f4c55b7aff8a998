package transport

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"time"

	"github.com/cohortlab/cohort/internal/atomicfile"
)

// NodeIDLen is the length of a NodeID in bytes.
const NodeIDLen = 16

// NodeID names a node: the first 16 bytes of SHA-256 of its ed25519 public key.
// Its String form (32 lower-case hex digits) is what logs, configs and the ledger use.
type NodeID [NodeIDLen]byte

// NodeIDFromPublicKey derives the NodeID of an ed25519 public key.
func NodeIDFromPublicKey(pub ed25519.PublicKey) NodeID {
	sum := sha256.Sum256(pub)
	var id NodeID
	copy(id[:], sum[:NodeIDLen])
	return id
}

// String returns the id as 32 lower-case hex digits.
func (id NodeID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the zero NodeID (no node has it in practice).
func (id NodeID) IsZero() bool { return id == NodeID{} }

// ParseNodeID parses the 32-hex-digit form produced by NodeID.String.
func ParseNodeID(s string) (NodeID, error) {
	var id NodeID
	if len(s) != 2*NodeIDLen {
		return id, fmt.Errorf("transport: node id %q: want %d hex digits, got %d", s, 2*NodeIDLen, len(s))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("transport: node id %q: %w", s, err)
	}
	return id, nil
}

// Identity is a node's long-term key and the self-signed certificate made from it.
// The key is the identity; the certificate only carries it through TLS.
type Identity struct {
	Key  ed25519.PrivateKey
	cert tls.Certificate
	id   NodeID
}

// ErrKeyFile is wrapped by every error about a malformed or wrong-type key file.
var ErrKeyFile = errors.New("transport: bad key file")

const pemTypePrivateKey = "PRIVATE KEY"

// GenerateIdentity makes a new identity from 32 bytes of rand
// (crypto/rand.Reader in production, a seeded reader in tests).
func GenerateIdentity(rand io.Reader) (*Identity, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(rand, seed); err != nil {
		return nil, fmt.Errorf("transport: generate identity: %w", err)
	}
	return NewIdentity(ed25519.NewKeyFromSeed(seed))
}

// NewIdentity wraps an existing ed25519 private key. The certificate is deterministic:
// the same key always yields the same certificate bytes (fixed validity window, serial
// derived from the key), so making it needs no clock or randomness.
func NewIdentity(key ed25519.PrivateKey) (*Identity, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("transport: ed25519 private key has %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	pub := key.Public().(ed25519.PublicKey)
	id := NodeIDFromPublicKey(pub)
	der, err := selfSignedCert(key, id)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("transport: parse own certificate: %w", err)
	}
	return &Identity{
		Key:  key,
		cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		id:   id,
	}, nil
}

func selfSignedCert(key ed25519.PrivateKey, id NodeID) ([]byte, error) {
	tmpl := &x509.Certificate{
		SerialNumber: new(big.Int).SetBytes(id[:]),
		Subject:      pkix.Name{CommonName: "cohort-" + id.String()},
		// Validity is not checked by the verifier (the key is the identity); the window
		// is fixed so the certificate is a pure function of the key.
		NotBefore:             time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"cohort"},
	}
	pub := key.Public()
	// ed25519 signing ignores the rand argument; pass a reader that fails loudly if that changes.
	der, err := x509.CreateCertificate(failReader{}, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, fmt.Errorf("transport: create certificate: %w", err)
	}
	return der, nil
}

type failReader struct{}

func (failReader) Read([]byte) (int, error) {
	return 0, errors.New("transport: unexpected randomness request while signing")
}

// NodeID returns the node's id.
func (i *Identity) NodeID() NodeID { return i.id }

// PublicKey returns the node's public key.
func (i *Identity) PublicKey() ed25519.PublicKey { return i.Key.Public().(ed25519.PublicKey) }

// Certificate returns the DER bytes of the self-signed certificate.
func (i *Identity) Certificate() []byte { return i.cert.Certificate[0] }

// Sign signs msg with the node's key (ed25519: deterministic).
func (i *Identity) Sign(msg []byte) []byte { return ed25519.Sign(i.Key, msg) }

// MarshalKeyPEM encodes the private key as a PKCS#8 PEM block.
func (i *Identity) MarshalKeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(i.Key)
	if err != nil {
		return nil, fmt.Errorf("transport: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemTypePrivateKey, Bytes: der}), nil
}

// SaveKey writes the private key to path as PEM with mode 0600. It writes to a temporary
// file in the same directory and renames it, so a crash never leaves a half-written key.
func (i *Identity) SaveKey(path string) error {
	data, err := i.MarshalKeyPEM()
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return fmt.Errorf("transport: save key %s: %w", path, err)
	}
	return nil
}

// ParseKeyPEM decodes a PEM-encoded PKCS#8 ed25519 private key. name appears in errors.
func ParseKeyPEM(name string, data []byte) (*Identity, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w %s: no PEM block found", ErrKeyFile, name)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w %s: trailing data after the PEM block", ErrKeyFile, name)
	}
	if block.Type != pemTypePrivateKey {
		return nil, fmt.Errorf("%w %s: PEM type %q, want %q", ErrKeyFile, name, block.Type, pemTypePrivateKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrKeyFile, name, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w %s: key type %T, want ed25519", ErrKeyFile, name, k)
	}
	return NewIdentity(key)
}

// LoadKey reads an identity saved by SaveKey. A file that is not a PEM PKCS#8 ed25519
// key gives an error wrapping ErrKeyFile and naming the file.
func LoadKey(path string) (*Identity, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("transport: load key: %w", err)
	}
	return ParseKeyPEM(path, data)
}

// LoadOrCreateKey loads the key at path, or, if the file does not exist, generates one
// from rand and saves it there (mode 0600).
func LoadOrCreateKey(path string, rand io.Reader) (*Identity, error) {
	id, err := LoadKey(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return id, err
	}
	id, err = GenerateIdentity(rand)
	if err != nil {
		return nil, err
	}
	if err := id.SaveKey(path); err != nil {
		return nil, err
	}
	return id, nil
}
