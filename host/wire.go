package host

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"
)

// Wire framing: every message is a uvarint length followed by that many bytes of
// protobuf. The reader tells apart the three ways a read can fail, because the runtime
// treats them differently: a closed or broken stream (the transport's business), a
// message over the size limit, and bytes that are not a message of the protocol (both
// of which are the sender's fault).

// errOversized and errMalformed mark a peer that broke the protocol.
var (
	errOversized = errors.New("message over the size limit")
	errMalformed = errors.New("malformed message")
)

// isViolation reports whether err means the remote peer broke the protocol.
func isViolation(err error) bool {
	return errors.Is(err, errOversized) || errors.Is(err, errMalformed)
}

type msgReader struct {
	r   *bufio.Reader
	max int
	buf []byte
}

func newMsgReader(r io.Reader, max int) *msgReader {
	return &msgReader{r: bufio.NewReaderSize(r, 4096), max: max}
}

// next reads one message into m. io.EOF means the stream ended cleanly between messages.
func (mr *msgReader) next(m proto.Message) (size int, err error) {
	n, err := binary.ReadUvarint(mr.r)
	if err != nil {
		if err == io.EOF {
			return 0, io.EOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, fmt.Errorf("%w: stream ended inside a length prefix", errMalformed)
		}
		if isOverflow(err) {
			return 0, fmt.Errorf("%w: bad length prefix: %v", errMalformed, err)
		}
		return 0, err
	}
	if n > uint64(mr.max) {
		return 0, fmt.Errorf("%w: %d bytes announced, limit %d", errOversized, n, mr.max)
	}
	if cap(mr.buf) < int(n) {
		mr.buf = make([]byte, n)
	}
	buf := mr.buf[:n]
	if _, err := io.ReadFull(mr.r, buf); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF {
			return 0, fmt.Errorf("%w: stream ended inside a %d-byte message", errMalformed, n)
		}
		return 0, err
	}
	if err := proto.Unmarshal(buf, m); err != nil {
		return 0, fmt.Errorf("%w: %v", errMalformed, err)
	}
	return int(n), nil
}

func isOverflow(err error) bool {
	return err != nil && err.Error() == "binary: varint overflows a 64-bit integer"
}

// appendFrame appends the framed encoding of m to buf.
func appendFrame(buf []byte, m proto.Message) ([]byte, error) {
	size := proto.Size(m)
	buf = binary.AppendUvarint(buf, uint64(size))
	return proto.MarshalOptions{}.MarshalAppend(buf, m)
}
