package linkshape

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseLink(t *testing.T) {
	cases := []struct {
		in   string
		want Link
		str  string
	}{
		{"10mbit,50ms,1%", Link{Rate: 10e6, Delay: 50 * time.Millisecond, Loss: 0.01}, "10mbit,50ms,1%"},
		{"10Mbit, 50ms, 0.5%", Link{Rate: 10e6, Delay: 50 * time.Millisecond, Loss: 0.005}, "10mbit,50ms,0.5%"},
		{"1.5mbit,20ms±5ms,2%", Link{Rate: 1.5e6, Delay: 20 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.02}, "1500kbit,20ms,2%,5ms"},
		{"1.5mbit,20ms+-5ms,2%", Link{Rate: 1.5e6, Delay: 20 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.02}, "1500kbit,20ms,2%,5ms"},
		{"100kbit,1s,0%,10ms", Link{Rate: 1e5, Delay: time.Second, Jitter: 10 * time.Millisecond}, "100kbit,1s,0%,10ms"},
		{"1gbit", Link{Rate: 1e9}, "1gbit,0s,0%"},
		{"123bit,0,7%", Link{Rate: 123, Loss: 0.07}, "123bit,0s,7%"},
		{"unlimited,50ms", Link{Delay: 50 * time.Millisecond}, "unlimited,50ms,0%"},
		{"2gbit,1.5ms,0.001%", Link{Rate: 2e9, Delay: 1500 * time.Microsecond, Loss: 0.00001}, "2gbit,1.5ms,0.001%"},
	}
	for _, tc := range cases {
		got, err := ParseLink(tc.in)
		if err != nil {
			t.Errorf("ParseLink(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseLink(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		if s := got.String(); s != tc.str {
			t.Errorf("ParseLink(%q).String() = %q, want %q", tc.in, s, tc.str)
		}
		again, err := ParseLink(got.String())
		if err != nil || again != got {
			t.Errorf("round trip of %q: %+v, %v", got.String(), again, err)
		}
	}
}

func TestParseLinkErrors(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", "empty"},
		{"10", "no unit"},
		{"10mbps,50ms", "no unit"},
		{"fastmbit", "not a decimal"},
		{"-1mbit", "negative"},
		{"1e3kbit", "not a decimal"},
		{"0.5bit", "whole number"},
		{"10mbit,fast", "delay"},
		{"10mbit,-5ms", "delay"},
		{"10mbit,50ms,1", "% sign"},
		{"10mbit,50ms,100%", "outside [0, 1)"},
		{"10mbit,50ms,-1%", "plain decimal"},
		{"10mbit,50ms,1e2%", "plain decimal"},
		{"10mbit,50ms±1ms,1%,2ms", "jitter given twice"},
		{"10mbit,50ms±x,1%", "jitter"},
		{"10mbit,50ms,1%,1ms,extra", "at most 4"},
		{"99999999999gbit", "too large"},
	}
	for _, tc := range cases {
		_, err := ParseLink(tc.in)
		if !errors.Is(err, ErrLinkSpec) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseLink(%q) err = %v, want ErrLinkSpec mentioning %q", tc.in, err, tc.want)
		}
	}
}

func FuzzParseLink(f *testing.F) {
	for _, s := range []string{"10mbit,50ms,1%", "1.5mbit,20ms±5ms,2%", "100kbit,1s,0%,10ms", "unlimited", "0.001gbit,0,0.0001%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLink(s)
		if err != nil {
			return
		}
		if err := l.Validate(); err != nil {
			t.Fatalf("ParseLink(%q) returned an invalid link: %v", s, err)
		}
		again, err := ParseLink(l.String())
		if err != nil {
			t.Fatalf("String %q of ParseLink(%q) does not parse: %v", l.String(), s, err)
		}
		if again != l {
			t.Fatalf("round trip of %q: %+v != %+v", s, again, l)
		}
	})
}
