package compress

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Wire format constants (see doc.go and FORMAT.md).
const (
	// Magic is the first four bytes of every message.
	Magic = "CHZP"
	// Version is the wire-format version this package writes and reads.
	Version = 1

	hdrFixed = 4 + 1 + 1 + 8 + 8 + 4 // magic, version, setting length, count, shape hash, CRC
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header is the parsed header of a message.
type Header struct {
	Version   uint8
	Setting   string // canonical setting string, as written by the encoder
	Count     uint64 // number of float32 values coded
	ShapeHash uint64 // Shape.Hash of the encoder's Shape, 0 for none
	CRC       uint32 // CRC-32C over the header bytes before it and the payload
	Payload   []byte // aliases the message
}

// appendHeader appends a header with a zero CRC; finishCRC fills it in once
// the payload follows it.
func appendHeader(dst []byte, setting string, count int, shapeHash uint64) []byte {
	dst = append(dst, Magic...)
	dst = append(dst, Version, byte(len(setting)))
	dst = append(dst, setting...)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(count))
	dst = binary.LittleEndian.AppendUint64(dst, shapeHash)
	return append(dst, 0, 0, 0, 0)
}

// finishCRC computes the checksum of msg (a header whose last four bytes are
// at crcOff, then the payload) and stores it.
func finishCRC(msg []byte, crcOff int) {
	c := crc32.Update(0, castagnoli, msg[:crcOff])
	c = crc32.Update(c, castagnoli, msg[crcOff+4:])
	binary.LittleEndian.PutUint32(msg[crcOff:], c)
}

// ReadHeader parses and checks the header of msg: magic, version, lengths and
// the CRC-32C. It does not check the payload against the setting; Decode does.
func ReadHeader(msg []byte) (Header, error) {
	h, setting, err := readHeader(msg)
	h.Setting = string(setting)
	return h, err
}

// readHeader is ReadHeader without allocating: the setting is returned as a
// slice of msg and h.Setting is left empty.
func readHeader(msg []byte) (h Header, setting []byte, err error) {
	if len(msg) < 6 {
		return h, nil, corruptf("message of %d bytes shorter than a header", len(msg))
	}
	if string(msg[:4]) != Magic {
		return h, nil, corruptf("bad magic %q", msg[:4])
	}
	h.Version = msg[4]
	if h.Version != Version {
		return h, nil, fmt.Errorf("%w: version %d, this package reads %d", ErrVersion, h.Version, Version)
	}
	l := int(msg[5])
	if len(msg) < hdrFixed+l {
		return h, nil, corruptf("message of %d bytes shorter than its %d-byte header", len(msg), hdrFixed+l)
	}
	setting = msg[6 : 6+l]
	p := 6 + l
	h.Count = binary.LittleEndian.Uint64(msg[p:])
	h.ShapeHash = binary.LittleEndian.Uint64(msg[p+8:])
	h.CRC = binary.LittleEndian.Uint32(msg[p+16:])
	h.Payload = msg[p+20:]
	c := crc32.Update(0, castagnoli, msg[:p+16])
	c = crc32.Update(c, castagnoli, h.Payload)
	if c != h.CRC {
		return h, setting, fmt.Errorf("%w: stored %08x, computed %08x", ErrChecksum, h.CRC, c)
	}
	return h, setting, nil
}
