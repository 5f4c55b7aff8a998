package transport

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// ALPN is the application protocol negotiated on every connection.
const ALPN = "cohort/1"

// Errors from peer authentication. A handshake refused for one of these reasons fails
// on the refusing side with an error wrapping the sentinel; the other side sees a TLS alert.
var (
	ErrNoPeerCert     = errors.New("transport: peer presented no certificate")
	ErrPeerCert       = errors.New("transport: peer certificate is not a valid self-signed ed25519 certificate")
	ErrPeerNotAllowed = errors.New("transport: peer not allowed")
)

// verifyPeer checks that raw holds exactly one self-signed ed25519 certificate and
// returns its public key. Validity dates are not checked: the key is the identity, and
// the TLS handshake has already proved the peer holds it.
func verifyPeer(raw [][]byte) (ed25519.PublicKey, error) {
	if len(raw) == 0 {
		return nil, ErrNoPeerCert
	}
	if len(raw) != 1 {
		return nil, fmt.Errorf("%w: chain of %d certificates, want 1", ErrPeerCert, len(raw))
	}
	cert, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPeerCert, err)
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok || cert.PublicKeyAlgorithm != x509.Ed25519 {
		return nil, fmt.Errorf("%w: key algorithm %v", ErrPeerCert, cert.PublicKeyAlgorithm)
	}
	// CheckSignatureFrom would insist on CA basic constraints; check the self-signature directly.
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		return nil, fmt.Errorf("%w: self-signature: %v", ErrPeerCert, err)
	}
	return pub, nil
}

func verifyFunc(allow func(NodeID) error) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		pub, err := verifyPeer(raw)
		if err != nil {
			return err
		}
		if allow != nil {
			id := NodeIDFromPublicKey(pub)
			if err := allow(id); err != nil {
				return fmt.Errorf("%w: %s: %w", ErrPeerNotAllowed, id, err)
			}
		}
		return nil
	}
}

// serverTLS requires a client certificate; both sides verify with verifyPeer + Allow.
func serverTLS(cfg *Config) *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{cfg.Identity.cert},
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: verifyFunc(cfg.Allow),
		NextProtos:            []string{ALPN},
	}
}

func clientTLS(cfg *Config) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cfg.Identity.cert},
		// Chain verification against CAs is replaced by verifyPeer: there are no CAs,
		// nodes are known by key. VerifyPeerCertificate still runs and must pass.
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: verifyFunc(cfg.Allow),
		NextProtos:            []string{ALPN},
		ServerName:            "cohort",
	}
}
