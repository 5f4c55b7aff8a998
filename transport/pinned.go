package transport

import (
	"fmt"
	"net"
	"strings"
)

// ParsePinned parses "KEYID@HOST:PORT" (a node key ID pinned to an address) or "HOST:PORT" (key
// "" : not pinned). The address must have a port.
func ParsePinned(s string) (key, addr string, err error) {
	addr = strings.TrimSpace(s)
	if k, a, ok := strings.Cut(addr, "@"); ok {
		if _, err := ParseNodeID(k); err != nil {
			return "", "", fmt.Errorf("key before @: %w", err)
		}
		key, addr = k, a
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", "", fmt.Errorf("address %q: %w (want HOST:PORT)", addr, err)
	}
	return key, addr, nil
}
