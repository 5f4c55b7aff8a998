package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/cohortlab/cohort/internal/msgcheck"
	"github.com/cohortlab/cohort/internal/wirecode"
)

// Frame layout (all integers big-endian):
//
//	"CH" | version (1 byte, = 1) | header length (uint32) | header (msgpack) | payload
//
// The header is a msgpack map {t: type, i: request id, n: payload length, c: CRC32C of
// the payload, e: error text (replies), b: application body (msgpack bin)}, its integers in the
// fewest bytes that hold them (frames with fixed-width integers, as written before, read the
// same). The payload follows as raw bytes: tensors are never encoded element by element.
const (
	frameMagic0, frameMagic1 = 'C', 'H'
	frameVersion             = 1
	framePrefixLen           = 7
	// MaxHeaderSize caps the encoded msgpack header of a frame.
	MaxHeaderSize = 64 << 10
	// payloadStep is how much of a payload is allocated before the bytes arrive: a peer
	// that announces a large payload and sends less costs at most this much extra memory.
	payloadStep = 1 << 20
	// headerStep is the same for a header: a stalled request costs a few KiB, not the
	// MaxHeaderSize its prefix may announce.
	headerStep = 4 << 10
)

// Frame errors. ReadMessage wraps exactly one of them (or returns io.EOF at a clean end).
var (
	ErrBadMagic              = errors.New("transport: not a Cohort frame (bad magic or version)")
	ErrHeaderTooLarge        = errors.New("transport: frame header too large")
	ErrPayloadTooLarge error = wirecode.New(5, "transport: frame payload too large")
	ErrTruncated             = errors.New("transport: truncated frame")
	ErrChecksum              = errors.New("transport: payload checksum mismatch")
	ErrMalformedHeader       = errors.New("transport: malformed frame header")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MaxBodyList bounds the elements of any array or map in a header body.
const MaxBodyList = 1 << 16

// Header is the part of a message every receiver decodes before the payload.
type Header struct {
	// Type names the message, e.g. "round.upload". It selects the handler (see Mux).
	Type string
	// ID is a request id chosen by the caller; a reply carries the id of its request.
	ID uint64
	// Err, in a reply, is the handler's error text; Call turns it into a *RemoteError.
	Err string
	// Code, in a reply with Err, classifies the error (the wire code of the sentinel the handler
	// wrapped; 0 for none): the caller's *RemoteError matches that sentinel with errors.Is.
	Code uint16
	// Body is an application-defined msgpack document (see SetBody, DecodeBody).
	Body []byte
}

// marshal encodes v with msgpack, each integer in the fewest bytes that hold its value (msgpack's
// own encoder gives a uint64 nine bytes whatever it holds). Any msgpack decoder reads either.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// SetBody encodes v with msgpack into h.Body, integers compact (see marshal).
func (h *Header) SetBody(v any) error {
	b, err := marshal(v)
	if err != nil {
		return fmt.Errorf("transport: encode %s body: %w", h.Type, err)
	}
	h.Body = b
	return nil
}

// DecodeBody decodes h.Body into v. Bodies come from the network: declared lengths the bytes
// cannot hold, or lists longer than MaxBodyList, are refused before msgpack allocates for them.
func (h *Header) DecodeBody(v any) error {
	if err := msgcheck.Check(h.Body, MaxBodyList); err != nil {
		return fmt.Errorf("transport: decode %s body: %w", h.Type, err)
	}
	if err := msgpack.Unmarshal(h.Body, v); err != nil {
		return fmt.Errorf("transport: decode %s body: %w", h.Type, err)
	}
	return nil
}

// EncodePayload encodes v with msgpack for a message's payload: an application document that
// may be larger than a header holds (a page of records, a round of many participants).
func EncodePayload(v any) ([]byte, error) {
	b, err := marshal(v)
	if err != nil {
		return nil, fmt.Errorf("transport: encode payload: %w", err)
	}
	return b, nil
}

// DecodePayload decodes a payload EncodePayload made into v. Payloads come from the network:
// declared lengths the bytes cannot hold, or lists longer than MaxBodyList, are refused before
// msgpack allocates for them.
func DecodePayload(b []byte, v any) error {
	if err := msgcheck.Check(b, MaxBodyList); err != nil {
		return fmt.Errorf("%w: payload: %w", ErrMalformedHeader, err)
	}
	if err := msgpack.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: payload: %w", ErrMalformedHeader, err)
	}
	return nil
}

// Message is a header and its raw payload.
type Message struct {
	Header
	Payload []byte
}

type wireHeader struct {
	Type string `msgpack:"t"`
	ID   uint64 `msgpack:"i"`
	Len  uint64 `msgpack:"n"`
	CRC  uint32 `msgpack:"c"`
	Err  string `msgpack:"e,omitempty"`
	Code uint16 `msgpack:"k,omitempty"`
	Body []byte `msgpack:"b,omitempty"`
}

// AppendFrameHeader appends the frame prefix and header for a payload to dst.
func appendFrameHeader(dst []byte, h Header, payload []byte) ([]byte, error) {
	wh := wireHeader{
		Type: h.Type, ID: h.ID, Len: uint64(len(payload)),
		CRC: crc32.Checksum(payload, castagnoli), Err: h.Err, Code: h.Code, Body: h.Body,
	}
	enc, err := marshal(&wh)
	if err != nil {
		return dst, fmt.Errorf("transport: encode header: %w", err)
	}
	if len(enc) > MaxHeaderSize {
		return dst, fmt.Errorf("%w: %d bytes (type %q), limit %d", ErrHeaderTooLarge, len(enc), h.Type, MaxHeaderSize)
	}
	dst = append(dst, frameMagic0, frameMagic1, frameVersion)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(enc)))
	return append(dst, enc...), nil
}

// oneWriteMax is the largest payload WriteMessage copies behind the header to write both at once.
const oneWriteMax = 64 << 10

// WriteMessage writes one frame: the header, then the payload as raw bytes.
func WriteMessage(w io.Writer, h Header, payload []byte) error {
	n := 128 + len(h.Body)
	if len(payload) <= oneWriteMax {
		n += len(payload)
	}
	buf, err := appendFrameHeader(make([]byte, 0, n), h, payload)
	if err != nil {
		return err
	}
	// A frame of up to oneWriteMax bytes goes out in one write, so that QUIC packs its header with
	// its first payload bytes (a header written alone is popped into a packet of its own) and the
	// stream's FIN, set by the Close after it, with its last; larger payloads are not copied.
	if len(payload) <= oneWriteMax {
		buf = append(buf, payload...)
		payload = nil
	}
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("transport: write %s header: %w", h.Type, err)
	}
	if len(payload) > 0 {
		if _, err := w.Write(payload); err != nil {
			return fmt.Errorf("transport: write %s payload: %w", h.Type, err)
		}
	}
	return nil
}

// ReadMessage reads one frame. maxPayload caps the payload (≤ 0 means DefaultMaxPayload);
// the header is capped at MaxHeaderSize. At a clean end of stream (no byte of a new frame)
// it returns io.EOF; otherwise errors wrap ErrBadMagic, ErrHeaderTooLarge,
// ErrPayloadTooLarge, ErrTruncated, ErrChecksum, ErrMalformedHeader, or the reader's error.
// Memory is allocated only for lengths already checked against the caps, and the header
// and payload grow as their bytes arrive.
func ReadMessage(r io.Reader, maxPayload int64) (Message, error) {
	if maxPayload <= 0 {
		maxPayload = DefaultMaxPayload
	}
	wh, err := readHeader(r)
	if err != nil {
		return Message{}, err
	}
	if err := checkPayloadLen(wh, maxPayload); err != nil {
		return Message{}, err
	}
	return readBody(r, wh)
}

// readHeader reads a frame's prefix and header, not its payload: enough to route the
// request and check the payload length it announces before any payload byte is read.
func readHeader(r io.Reader) (wireHeader, error) {
	var prefix [framePrefixLen]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		if err == io.EOF {
			return wireHeader{}, io.EOF
		}
		return wireHeader{}, readErr("prefix", err)
	}
	if prefix[0] != frameMagic0 || prefix[1] != frameMagic1 || prefix[2] != frameVersion {
		return wireHeader{}, fmt.Errorf("%w: got % x", ErrBadMagic, prefix[:3])
	}
	hlen := binary.BigEndian.Uint32(prefix[3:])
	if hlen > MaxHeaderSize {
		return wireHeader{}, fmt.Errorf("%w: %d bytes, limit %d", ErrHeaderTooLarge, hlen, MaxHeaderSize)
	}
	hbuf, err := readGrowing(r, int(hlen), headerStep)
	if err != nil {
		return wireHeader{}, readErr("header", err)
	}
	return decodeWireHeader(hbuf)
}

// checkPayloadLen refuses a payload the header announces above limit.
func checkPayloadLen(wh wireHeader, limit int64) error {
	if wh.Len > uint64(max(limit, 0)) {
		return fmt.Errorf("%w: %s payload of %d bytes, limit %d", ErrPayloadTooLarge, wh.Type, wh.Len, max(limit, 0))
	}
	return nil
}

// readBody reads the payload wh announces (its length already checked) and verifies it.
func readBody(r io.Reader, wh wireHeader) (Message, error) {
	payload, err := readGrowing(r, int(wh.Len), payloadStep)
	if err != nil {
		return Message{}, readErr(wh.Type+" payload", err)
	}
	if got := crc32.Checksum(payload, castagnoli); got != wh.CRC {
		return Message{}, fmt.Errorf("%w: %s payload CRC32C %08x, header says %08x", ErrChecksum, wh.Type, got, wh.CRC)
	}
	return Message{Header: wh.header(), Payload: payload}, nil
}

func (wh wireHeader) header() Header {
	return Header{Type: wh.Type, ID: wh.ID, Err: wh.Err, Code: wh.Code, Body: wh.Body}
}

func decodeWireHeader(b []byte) (wireHeader, error) {
	var wh wireHeader
	if err := msgcheck.Check(b, MaxBodyList); err != nil {
		return wh, fmt.Errorf("%w: %v", ErrMalformedHeader, err)
	}
	br := bytes.NewReader(b)
	if err := msgpack.NewDecoder(br).Decode(&wh); err != nil {
		return wh, fmt.Errorf("%w: %v", ErrMalformedHeader, err)
	}
	if br.Len() != 0 {
		return wh, fmt.Errorf("%w: trailing bytes after the header", ErrMalformedHeader)
	}
	return wh, nil
}

func readErr(what string, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: stream ended inside the %s", ErrTruncated, what)
	}
	return fmt.Errorf("transport: read frame %s: %w", what, err)
}

// readGrowing reads exactly n bytes, growing the buffer by at most step ahead of the bytes
// received.
func readGrowing(r io.Reader, n, step int) ([]byte, error) {
	buf := make([]byte, 0, min(n, step))
	for len(buf) < n {
		want := min(n-len(buf), step)
		if cap(buf)-len(buf) < want {
			nb := make([]byte, len(buf), min(n, max(2*cap(buf), len(buf)+want)))
			copy(nb, buf)
			buf = nb
		}
		k, err := io.ReadFull(r, buf[len(buf):len(buf)+want])
		buf = buf[:len(buf)+k]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return buf, nil
}
