package datasets

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

func rawIDX(t testing.TB, dims []int, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := WriteIDX(&b, &IDX{Type: TypeUbyte, Dims: dims, Data: data}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gzIDX(t testing.TB, dims []int, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := WriteIDXGzip(&b, &IDX{Type: TypeUbyte, Dims: dims, Data: data}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func TestReadIDXRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		dims []int
	}{
		{"labels", []int{5}},
		{"images", []int{3, 4, 2}},
		{"empty", []int{0, 28, 28}},
		{"4d", []int{2, 2, 2, 2}},
	} {
		n := 1
		for _, d := range tc.dims {
			n *= d
		}
		data := seq(n)
		for enc, b := range map[string][]byte{"raw": rawIDX(t, tc.dims, data), "gzip": gzIDX(t, tc.dims, data)} {
			x, err := ReadIDX(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("%s/%s: %v", tc.name, enc, err)
			}
			if x.Type != TypeUbyte || !equalInts(x.Dims, tc.dims) || !bytes.Equal(x.Data, data) {
				t.Errorf("%s/%s: got dims %v, %d bytes; want %v, %d", tc.name, enc, x.Dims, len(x.Data), tc.dims, len(data))
			}
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestReadIDXMalformed(t *testing.T) {
	good := rawIDX(t, []int{2, 3}, seq(6))
	gz := gzIDX(t, []int{2, 3}, seq(6))
	badCRC := bytes.Clone(gz)
	badCRC[len(badCRC)-8] ^= 0xff // gzip trailer: CRC-32, then size
	badBody := bytes.Clone(gzIDX(t, []int{40, 40}, seq(1600)))
	badBody[10] |= 0x06 // first deflate block: reserved block type 3
	huge := []byte{0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2}
	claims1G := []byte{0, 0, 8, 1, 0x40, 0, 0, 0, 1, 2, 3}
	for _, tc := range []struct {
		name string
		in   []byte
		want error
		msg  string
	}{
		{"empty", nil, ErrTruncated, "magic"},
		{"bad magic", append([]byte{1, 2}, good[2:]...), ErrMalformed, "bad magic"},
		{"int type", append([]byte{0, 0, TypeInt}, good[3:]...), ErrMalformed, "0x0c"},
		{"zero dims", []byte{0, 0, 8, 0, 1}, ErrMalformed, "zero dimensions"},
		{"too many dims", []byte{0, 0, 8, 200}, ErrMalformed, "200 dimensions"},
		{"short header", good[:6], ErrTruncated, "header"},
		{"short data", good[:len(good)-1], ErrTruncated, "got 5 of 6"},
		{"trailing", append(bytes.Clone(good), 9), ErrMalformed, "trailing"},
		{"huge dims", huge, ErrTooLarge, "exceed"},
		{"claims 1 GiB", claims1G, ErrTruncated, "got 3 of 1073741824"},
		{"gzip bad crc", badCRC, ErrMalformed, "gzip"},
		{"gzip corrupt", badBody, ErrMalformed, "gzip"},
		{"gzip truncated", gz[:len(gz)-10], ErrTruncated, ""},
		{"gzip header only", gz[:5], ErrMalformed, "gzip"},
		{"gzip trailing garbage", append(bytes.Clone(gz), "garbage!!!"...), ErrMalformed, "gzip"},
		{"gzip two members", append(bytes.Clone(gz), gz...), ErrMalformed, "trailing"},
	} {
		x, err := ReadIDX(bytes.NewReader(tc.in))
		if err == nil {
			t.Errorf("%s: got %v dims, want error", tc.name, x.Dims)
			continue
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: error %q does not wrap %q", tc.name, err, tc.want)
		}
		if !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: error %q does not mention %q", tc.name, err, tc.msg)
		}
	}
}

// A header claiming a huge array followed by a few bytes must not make the
// reader allocate the claimed size.
func TestReadIDXBoundedAllocation(t *testing.T) {
	in := []byte{0, 0, 8, 1}
	in = binary.BigEndian.AppendUint32(in, 1<<30)
	in = append(in, seq(100)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		if _, err := ReadIDX(bytes.NewReader(in)); !errors.Is(err, ErrTruncated) {
			t.Fatalf("got %v, want ErrTruncated", err)
		}
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 64<<20 {
		t.Errorf("10 reads of a 108-byte file claiming 1 GiB allocated %d MiB", got>>20)
	}
}

func TestWriteIDXRejects(t *testing.T) {
	for _, x := range []*IDX{
		nil,
		{Type: TypeFloat, Dims: []int{1}, Data: []byte{0}},
		{Type: TypeUbyte, Dims: nil, Data: nil},
		{Type: TypeUbyte, Dims: []int{2, 2}, Data: []byte{1, 2, 3}},
		{Type: TypeUbyte, Dims: []int{-1}, Data: nil},
	} {
		if err := WriteIDX(io.Discard, x); err == nil {
			t.Errorf("WriteIDX(%+v) succeeded", x)
		}
	}
}

func FuzzReadIDX(f *testing.F) {
	f.Add(rawIDX(f, []int{2, 3}, seq(6)))
	f.Add(gzIDX(f, []int{2, 2, 2}, seq(8)))
	f.Add(rawIDX(f, []int{4}, []byte{0, 1, 9, 10}))
	f.Add([]byte{0, 0, 8, 1, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x1f, 0x8b, 8, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		x, err := ReadIDX(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error %q wraps no sentinel", err)
			}
			return
		}
		// A decoded file re-encodes to the same raw bytes (if the input was raw).
		n := 1
		for _, d := range x.Dims {
			n *= d
		}
		if n != len(x.Data) {
			t.Fatalf("dims %v but %d bytes", x.Dims, len(x.Data))
		}
		var b bytes.Buffer
		if err := WriteIDX(&b, x); err != nil {
			t.Fatal(err)
		}
		if len(in) > 0 && in[0] == 0 && !bytes.Equal(b.Bytes(), in) {
			t.Fatalf("raw input does not round-trip")
		}
		y, err := ReadIDX(&b)
		if err != nil || !bytes.Equal(y.Data, x.Data) || !equalInts(y.Dims, x.Dims) {
			t.Fatalf("re-read: %v", err)
		}
	})
}
