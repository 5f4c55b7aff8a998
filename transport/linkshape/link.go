package linkshape

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ErrLinkSpec is wrapped by every ParseLink and Link.Validate error.
var ErrLinkSpec = errors.New("linkshape: bad link spec")

// Link describes one direction of a link.
type Link struct {
	// Rate is the link rate in bits per second; 0 means unlimited.
	Rate int64
	// Delay is the one-way propagation delay added to every packet.
	Delay time.Duration
	// Jitter spreads each packet's delay uniformly over [Delay−Jitter, Delay+Jitter]
	// (never below zero). Jitter never reorders packets: a packet is not delivered
	// before the one sent ahead of it.
	Jitter time.Duration
	// Loss is the probability in [0, 1) that a packet is dropped at random.
	Loss float64
}

// Validate reports a negative or out-of-range field.
func (l Link) Validate() error {
	switch {
	case l.Rate < 0:
		return fmt.Errorf("%w: negative rate %d bit/s", ErrLinkSpec, l.Rate)
	case l.Delay < 0:
		return fmt.Errorf("%w: negative delay %v", ErrLinkSpec, l.Delay)
	case l.Jitter < 0:
		return fmt.Errorf("%w: negative jitter %v", ErrLinkSpec, l.Jitter)
	case math.IsNaN(l.Loss) || l.Loss < 0 || l.Loss >= 1:
		return fmt.Errorf("%w: loss %v is outside [0, 1)", ErrLinkSpec, l.Loss)
	}
	return nil
}

var rateUnits = []struct {
	name string
	mult int64
}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}}

// ParseLink parses "RATE[,DELAY[,LOSS[,JITTER]]]", e.g. "10mbit,50ms,1%",
// "10mbit,50ms±5ms,1%" or "10mbit,50ms,1%,5ms".
//
//	RATE    a decimal number and a unit bit, kbit, mbit or gbit (per second; case-insensitive),
//	        or "unlimited"/"0"
//	DELAY   a Go duration (50ms, 1.5ms, 0); an optional "±J" or "+-J" suffix sets the jitter
//	LOSS    a percentage in [0, 100) with a % sign (1%, 0.5%)
//	JITTER  a Go duration (only if the delay has no ± suffix)
//
// Missing fields are zero. Parse(l.String()) == l for every valid l.
func ParseLink(s string) (Link, error) {
	var l Link
	if strings.TrimSpace(s) == "" {
		return l, fmt.Errorf("%w: empty", ErrLinkSpec)
	}
	f := strings.Split(s, ",")
	if len(f) > 4 {
		return l, fmt.Errorf("%w %q: %d fields, want at most 4 (rate,delay,loss,jitter)", ErrLinkSpec, s, len(f))
	}
	for i := range f {
		f[i] = strings.TrimSpace(f[i])
	}
	var err error
	if l.Rate, err = parseRate(f[0]); err != nil {
		return l, fmt.Errorf("%w %q: rate: %v", ErrLinkSpec, s, err)
	}
	jitterSet := false
	if len(f) > 1 {
		d := f[1]
		for _, sep := range []string{"±", "+-"} {
			if base, j, ok := strings.Cut(d, sep); ok {
				if l.Jitter, err = parseDur(j); err != nil {
					return l, fmt.Errorf("%w %q: jitter: %v", ErrLinkSpec, s, err)
				}
				d, jitterSet = base, true
				break
			}
		}
		if l.Delay, err = parseDur(d); err != nil {
			return l, fmt.Errorf("%w %q: delay: %v", ErrLinkSpec, s, err)
		}
	}
	if len(f) > 2 {
		if l.Loss, err = parseLoss(f[2]); err != nil {
			return l, fmt.Errorf("%w %q: loss: %v", ErrLinkSpec, s, err)
		}
	}
	if len(f) > 3 {
		if jitterSet {
			return l, fmt.Errorf("%w %q: jitter given twice", ErrLinkSpec, s)
		}
		if l.Jitter, err = parseDur(f[3]); err != nil {
			return l, fmt.Errorf("%w %q: jitter: %v", ErrLinkSpec, s, err)
		}
	}
	if err := l.Validate(); err != nil {
		return l, fmt.Errorf("%w (in %q)", err, s)
	}
	return l, nil
}

func parseRate(s string) (int64, error) {
	ls := strings.ToLower(s)
	if ls == "unlimited" || ls == "0" {
		return 0, nil
	}
	for _, u := range rateUnits {
		num, ok := strings.CutSuffix(ls, u.name)
		if !ok {
			continue
		}
		// "bit" is a suffix of the other units; they come first, so num has no unit left.
		v, err := strconv.ParseFloat(num, 64)
		if err != nil || num == "" || strings.ContainsAny(num, "eEnNiIxXpP_") {
			return 0, fmt.Errorf("%q is not a decimal number", num)
		}
		if v < 0 || math.IsNaN(v) {
			return 0, fmt.Errorf("%q is negative", s)
		}
		bits := v * float64(u.mult)
		if bits >= math.MaxInt64/2 {
			return 0, fmt.Errorf("%q is too large", s)
		}
		r := math.Round(bits)
		if math.Abs(r-bits) > 1e-6*math.Max(1, bits) {
			return 0, fmt.Errorf("%q is not a whole number of bit/s", s)
		}
		return int64(r), nil
	}
	return 0, fmt.Errorf("%q has no unit (bit, kbit, mbit, gbit)", s)
}

func parseDur(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return d, nil
}

// parseLoss parses "P%" by moving the decimal point of P two places left as text, so
// that String, which does the reverse, round-trips exactly.
func parseLoss(s string) (float64, error) {
	p, ok := strings.CutSuffix(s, "%")
	if !ok {
		return 0, fmt.Errorf("%q needs a %% sign", s)
	}
	if p == "" || strings.Trim(p, "0123456789.") != "" || strings.Count(p, ".") > 1 || p == "." {
		return 0, fmt.Errorf("%q is not a plain decimal percentage", s)
	}
	v, err := strconv.ParseFloat(shiftDecimal(p, -2), 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %v", s, err)
	}
	return v, nil
}

// shiftDecimal moves the decimal point of the plain decimal string p by k places
// (k < 0: left, k > 0: right) and returns a plain decimal string.
func shiftDecimal(p string, k int) string {
	intPart, frac, _ := strings.Cut(p, ".")
	digits := intPart + frac
	point := len(intPart) + k
	for point <= 0 {
		digits = "0" + digits
		point++
	}
	for point > len(digits) {
		digits += "0"
	}
	i, f := strings.TrimLeft(digits[:point], "0"), strings.TrimRight(digits[point:], "0")
	if i == "" {
		i = "0"
	}
	if f == "" {
		return i
	}
	return i + "." + f
}

// String formats l in the form ParseLink reads, "10mbit,50ms,1%" plus ",JITTER" when
// jitter is set.
func (l Link) String() string {
	var b strings.Builder
	if l.Rate == 0 {
		b.WriteString("unlimited")
	} else {
		for _, u := range rateUnits {
			if l.Rate%u.mult == 0 {
				fmt.Fprintf(&b, "%d%s", l.Rate/u.mult, u.name)
				break
			}
		}
	}
	b.WriteString("," + l.Delay.String())
	b.WriteString("," + shiftDecimal(strconv.FormatFloat(l.Loss, 'f', -1, 64), 2) + "%")
	if l.Jitter != 0 {
		b.WriteString("," + l.Jitter.String())
	}
	return b.String()
}
