package datasets

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// IDX element types (the third magic byte). Only TypeUbyte is decoded.
const (
	TypeUbyte  byte = 0x08
	TypeSbyte  byte = 0x09
	TypeShort  byte = 0x0B
	TypeInt    byte = 0x0C
	TypeFloat  byte = 0x0D
	TypeDouble byte = 0x0E
	maxIDXDims      = 16
)

// MaxIDXBytes caps the data size an IDX header may declare. Headers claiming
// more are rejected with ErrTooLarge before anything is allocated. The full
// Fashion-MNIST training images are 47,040,000 bytes.
const MaxIDXBytes = 1 << 31

// IDX is a decoded IDX file: a dense array of unsigned bytes in row-major
// order with the given dimensions.
type IDX struct {
	Type byte   // element type; always TypeUbyte after ReadIDX
	Dims []int  // dimensions, outermost first
	Data []byte // product(Dims) elements
}

// ReadIDX decodes one IDX file of unsigned bytes from r. The stream may be
// gzip-compressed: it is detected by the gzip magic bytes 1f 8b, not by a
// file name. The whole stream must be consumed: trailing bytes after the
// declared data are an error, and a gzip stream's checksum is verified.
//
// Errors wrap ErrMalformed (bad magic, unsupported type, zero dimensions,
// trailing data, corrupt gzip), ErrTruncated (data shorter than the header
// says) or ErrTooLarge (header declares more than MaxIDXBytes). Memory use
// is bounded by the bytes actually present, never by the declared size.
func ReadIDX(r io.Reader) (*IDX, error) {
	br := bufio.NewReader(r)
	var src io.Reader = br
	gz := false
	if head, _ := br.Peek(2); len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%w: gzip header: %v", ErrMalformed, err)
		}
		src = zr
		gz = true
	}
	wrap := func(err error) error {
		if gz && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: gzip: %v", ErrMalformed, err)
		}
		return err
	}

	var magic [4]byte
	if _, err := io.ReadFull(src, magic[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: header: file shorter than the 4-byte magic", ErrTruncated)
		}
		return nil, wrap(err)
	}
	if magic[0] != 0 || magic[1] != 0 {
		return nil, fmt.Errorf("%w: bad magic %02x%02x%02x%02x (want 0000TTNN)", ErrMalformed, magic[0], magic[1], magic[2], magic[3])
	}
	if magic[2] != TypeUbyte {
		return nil, fmt.Errorf("%w: element type 0x%02x not supported (only unsigned byte 0x08)", ErrMalformed, magic[2])
	}
	nd := int(magic[3])
	if nd == 0 {
		return nil, fmt.Errorf("%w: zero dimensions", ErrMalformed)
	}
	if nd > maxIDXDims {
		return nil, fmt.Errorf("%w: %d dimensions (at most %d)", ErrMalformed, nd, maxIDXDims)
	}
	hdr := make([]byte, 4*nd)
	if _, err := io.ReadFull(src, hdr); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: header: %d dimension sizes declared, file ends early", ErrTruncated, nd)
		}
		return nil, wrap(err)
	}
	dims := make([]int, nd)
	total := int64(1)
	for i := range dims {
		d := int64(binary.BigEndian.Uint32(hdr[4*i:]))
		dims[i] = int(d)
		if d != 0 && total > MaxIDXBytes/d {
			return nil, fmt.Errorf("%w: dimensions %v exceed %d bytes", ErrTooLarge, declaredDims(hdr, nd), int64(MaxIDXBytes))
		}
		total *= d
	}
	// Grow the buffer geometrically up to the declared size, so memory use
	// follows the bytes really present, and ends exactly at the declared size.
	data := make([]byte, 0, min(total, 1<<20))
	for int64(len(data)) < total {
		if len(data) == cap(data) {
			data = slices.Grow(data, int(min(total, 2*int64(cap(data)))-int64(len(data))))
		}
		n, err := src.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
			if int64(len(data)) < total {
				return nil, fmt.Errorf("%w: data: got %d of %d bytes (dims %v)", ErrTruncated, len(data), total, dims)
			}
			break
		}
		if err != nil {
			return nil, fmt.Errorf("data: %w", wrap(err))
		}
	}
	// The stream must end here; for gzip, reading to the end verifies the checksum.
	var one [1]byte
	if n, err := io.ReadFull(src, one[:]); n > 0 {
		return nil, fmt.Errorf("%w: trailing bytes after %d data bytes (dims %v)", ErrMalformed, total, dims)
	} else if err != io.EOF {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: gzip stream ends early", ErrTruncated)
		}
		return nil, fmt.Errorf("data: %w", wrap(err))
	}
	return &IDX{Type: TypeUbyte, Dims: dims, Data: data}, nil
}

func declaredDims(hdr []byte, nd int) []uint32 {
	out := make([]uint32, nd)
	for i := range out {
		out[i] = binary.BigEndian.Uint32(hdr[4*i:])
	}
	return out
}

// WriteIDX writes x as an uncompressed IDX file of unsigned bytes. It checks
// that len(x.Data) equals the product of x.Dims.
func WriteIDX(w io.Writer, x *IDX) error {
	if x == nil {
		return fmt.Errorf("datasets: WriteIDX: nil IDX")
	}
	if x.Type != TypeUbyte {
		return fmt.Errorf("datasets: WriteIDX: element type 0x%02x not supported", x.Type)
	}
	if len(x.Dims) == 0 || len(x.Dims) > maxIDXDims {
		return fmt.Errorf("datasets: WriteIDX: %d dimensions (want 1..%d)", len(x.Dims), maxIDXDims)
	}
	hdr := make([]byte, 4+4*len(x.Dims))
	hdr[2], hdr[3] = TypeUbyte, byte(len(x.Dims))
	total := int64(1)
	for i, d := range x.Dims {
		if d < 0 || int64(d) > 0xFFFFFFFF {
			return fmt.Errorf("datasets: WriteIDX: dimension %d = %d out of range", i, d)
		}
		binary.BigEndian.PutUint32(hdr[4+4*i:], uint32(d))
		total *= int64(d)
	}
	if total != int64(len(x.Data)) {
		return fmt.Errorf("datasets: WriteIDX: dims %v hold %d bytes, data has %d", x.Dims, total, len(x.Data))
	}
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	_, err := w.Write(x.Data)
	return err
}

// WriteIDXGzip writes x as a gzip-compressed IDX file with a deterministic
// header (no name, zero modification time) at the best compression level.
func WriteIDXGzip(w io.Writer, x *IDX) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	if err := WriteIDX(zw, x); err != nil {
		return err
	}
	return zw.Close()
}
