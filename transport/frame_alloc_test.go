package transport

import (
	"runtime"
	"testing"
)

// A body of a few bytes that declares a 4 GiB byte string must be refused before msgpack/v5
// allocates for it (it preallocates declared lengths).
func TestDecodeBodyRefusesLyingLengths(t *testing.T) {
	h := Header{Type: "t", Body: []byte{0x93, 0x01, 0x01, 0xc6, 0xff, 0xff, 0xff, 0xf0}}
	var v struct {
		A, B int
		C    []byte
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	err := h.DecodeBody(&v)
	runtime.ReadMemStats(&m1)
	if err == nil {
		t.Fatal("lying length accepted")
	}
	if grew := m1.TotalAlloc - m0.TotalAlloc; grew > 1<<20 {
		t.Fatalf("decoding 8 bytes allocated %d bytes", grew)
	}
}
