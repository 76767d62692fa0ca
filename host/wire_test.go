package host

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestFrameRoundTrip(t *testing.T) {
	var buf []byte
	for _, s := range []string{"", "a", string(bytes.Repeat([]byte("z"), 300))} {
		var err error
		if buf, err = appendFrame(buf, wrapperspb.String(s)); err != nil {
			t.Fatal(err)
		}
	}
	r := newMsgReader(bytes.NewReader(buf), 1024)
	for _, want := range []string{"", "a", string(bytes.Repeat([]byte("z"), 300))} {
		m := new(wrapperspb.StringValue)
		if _, err := r.next(m); err != nil {
			t.Fatal(err)
		}
		if m.GetValue() != want {
			t.Fatalf("got %q, want %q", m.GetValue(), want)
		}
	}
	if _, err := r.next(new(wrapperspb.StringValue)); err != io.EOF {
		t.Fatalf("after the last message: %v, want io.EOF", err)
	}
}

func TestFrameErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"oversized", binary.AppendUvarint(nil, 2048), errOversized},
		{"truncated body", []byte{10, 1, 2}, errMalformed},
		{"truncated prefix", []byte{0x80}, errMalformed},
		{"not protobuf", []byte{3, 0xff, 0xff, 0xff}, errMalformed},
		{"varint overflow", bytes.Repeat([]byte{0xff}, 11), errMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newMsgReader(bytes.NewReader(tc.in), 1024).next(new(wrapperspb.StringValue))
			if !errors.Is(err, tc.want) || !isViolation(err) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzMsgReader: any byte stream yields messages, EOF, or a violation; never a panic.
func FuzzMsgReader(f *testing.F) {
	good, _ := appendFrame(nil, wrapperspb.String("seed"))
	f.Add(good)
	f.Add([]byte{0xff, 0xff})
	f.Add(binary.AppendUvarint(nil, 1<<30))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := newMsgReader(bytes.NewReader(in), 4096)
		for i := 0; i < 1000; i++ {
			_, err := r.next(new(wrapperspb.StringValue))
			if err == nil {
				continue
			}
			if err != io.EOF && !isViolation(err) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
	})
}
