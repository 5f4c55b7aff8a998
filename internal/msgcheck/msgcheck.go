// Package msgcheck guards msgpack decoding of untrusted bytes: Check rejects inputs whose declared
// lengths the bytes cannot hold, before msgpack/v5 preallocates for them.
package msgcheck

import (
	"encoding/binary"
	"fmt"
)

// Check walks msgpack bytes without allocating and rejects declared lengths the input cannot
// hold (every array or map element takes at least one byte), arrays or maps longer than maxLen,
// nesting deeper than maxDepth, and the never-used code 0xc1.
//
// Why: msgpack/v5 (v5.4.1) preallocates a slice of the declared length before decoding its
// elements (its alloc limit is never applied: `flags&disableAllocLimitFlag != 1` is always true),
// so a 6-byte input declaring 2^32 elements makes it allocate gigabytes. Every decode of untrusted
// bytes should run this check first.
func Check(b []byte, maxLen int) error {
	c := shapeChecker{b: b, maxLen: maxLen}
	if err := c.value(0); err != nil {
		return err
	}
	return nil
}

const maxDepth = 32

type shapeChecker struct {
	b      []byte
	off    int
	maxLen int
}

func (c *shapeChecker) need(n int) error {
	if n < 0 || n > len(c.b)-c.off {
		return fmt.Errorf("msgpack: %d bytes needed at offset %d, %d left", n, c.off, len(c.b)-c.off)
	}
	return nil
}

func (c *shapeChecker) uint(size int) (int, error) {
	if err := c.need(size); err != nil {
		return 0, err
	}
	var v uint64
	switch size {
	case 1:
		v = uint64(c.b[c.off])
	case 2:
		v = uint64(binary.BigEndian.Uint16(c.b[c.off:]))
	case 4:
		v = uint64(binary.BigEndian.Uint32(c.b[c.off:]))
	}
	c.off += size
	if v > uint64(len(c.b)) {
		return 0, fmt.Errorf("msgpack: length %d exceeds input of %d bytes", v, len(c.b))
	}
	return int(v), nil
}

func (c *shapeChecker) skip(n int) error {
	if err := c.need(n); err != nil {
		return err
	}
	c.off += n
	return nil
}

func (c *shapeChecker) items(n, per, depth int) error {
	if n > c.maxLen {
		return fmt.Errorf("msgpack: %d elements at offset %d, limit %d", n, c.off, c.maxLen)
	}
	if n*per > len(c.b)-c.off {
		return fmt.Errorf("msgpack: %d elements declared at offset %d, %d bytes left", n, c.off, len(c.b)-c.off)
	}
	for i := 0; i < n*per; i++ {
		if err := c.value(depth + 1); err != nil {
			return err
		}
	}
	return nil
}

func (c *shapeChecker) value(depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("msgpack: nested deeper than %d", maxDepth)
	}
	if err := c.need(1); err != nil {
		return err
	}
	code := c.b[c.off]
	c.off++
	switch {
	case code <= 0x7f || code >= 0xe0 || code == 0xc0 || code == 0xc2 || code == 0xc3:
		return nil // fixints, nil, bools
	case code >= 0x80 && code <= 0x8f:
		return c.items(int(code&0x0f), 2, depth)
	case code >= 0x90 && code <= 0x9f:
		return c.items(int(code&0x0f), 1, depth)
	case code >= 0xa0 && code <= 0xbf:
		return c.skip(int(code & 0x1f))
	}
	switch code {
	case 0xc4, 0xd9: // bin8, str8
		n, err := c.uint(1)
		if err != nil {
			return err
		}
		return c.skip(n)
	case 0xc5, 0xda:
		n, err := c.uint(2)
		if err != nil {
			return err
		}
		return c.skip(n)
	case 0xc6, 0xdb:
		n, err := c.uint(4)
		if err != nil {
			return err
		}
		return c.skip(n)
	case 0xc7, 0xc8, 0xc9: // ext8/16/32: length, type, data
		n, err := c.uint(map[byte]int{0xc7: 1, 0xc8: 2, 0xc9: 4}[code])
		if err != nil {
			return err
		}
		return c.skip(1 + n)
	case 0xca:
		return c.skip(4)
	case 0xcb:
		return c.skip(8)
	case 0xcc, 0xd0:
		return c.skip(1)
	case 0xcd, 0xd1:
		return c.skip(2)
	case 0xce, 0xd2:
		return c.skip(4)
	case 0xcf, 0xd3:
		return c.skip(8)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1..16 plus the type byte
		return c.skip(1 + 1<<(code-0xd4))
	case 0xdc, 0xde:
		n, err := c.uint(2)
		if err != nil {
			return err
		}
		return c.items(n, map[byte]int{0xdc: 1, 0xde: 2}[code], depth)
	case 0xdd, 0xdf:
		n, err := c.uint(4)
		if err != nil {
			return err
		}
		return c.items(n, map[byte]int{0xdd: 1, 0xdf: 2}[code], depth)
	}
	return fmt.Errorf("msgpack: invalid code 0x%02x at offset %d", code, c.off-1)
}
