package remote

import (
	"errors"
	"fmt"

	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/journal"
)

// Error codes carried by Error frames.
const (
	codeNotFound     byte = 1
	codeExists       byte = 2
	codeDenied       byte = 3
	codeBadRequest   byte = 4
	codeConflict     byte = 5
	codeInternal     byte = 6
	codeBadVersion   byte = 7
	codeTrimmed      byte = 8
	codeChunkMissing byte = 9
	codeBadChunk     byte = 10
	codeBusy         byte = 11 // too many connections, or shutting down: retry later
	codeCorrupt      byte = 12
	codeRange        byte = 13 // a get's offset or length outside the object
)

var (
	// ErrDenied is wrapped by errors for requests the client's token does
	// not allow.
	ErrDenied = errors.New("denied by the store server")
	// ErrConflict is wrapped when a journal append or replace does not fit
	// the server's journal (another writer, or a lost record).
	ErrConflict = errors.New("journal conflict")
	// ErrBadRequest is wrapped when the server could not make sense of a
	// request.
	ErrBadRequest = errors.New("bad request")
	// ErrVersion is wrapped when client and server speak different
	// protocol versions.
	ErrVersion = errors.New("protocol version mismatch")
	// ErrBusy is wrapped when the server refused a connection for now
	// (connection limit, shutting down).
	ErrBusy = errors.New("store server busy")
	// ErrUnreachable is wrapped when the server could not be reached for
	// the retry period.
	ErrUnreachable = errors.New("gave up retrying (the plugin waits server_retry from backup.lock, 60s by default)")
)

// Error is an error the server reported for a request.
type Error struct {
	Code byte
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Unwrap maps the code to the sentinel callers test with errors.Is.
func (e *Error) Unwrap() error {
	switch e.Code {
	case codeNotFound:
		return backend.ErrNotFound
	case codeExists:
		return backend.ErrExists
	case codeDenied:
		return ErrDenied
	case codeBadRequest:
		return ErrBadRequest
	case codeRange:
		return backend.ErrRange
	case codeConflict:
		return ErrConflict
	case codeBadVersion:
		return ErrVersion
	case codeTrimmed:
		return journal.ErrTrimmed
	case codeChunkMissing:
		return chunk.ErrMissing
	case codeBadChunk:
		return chunk.ErrBad
	case codeBusy:
		return ErrBusy
	case codeCorrupt:
		return journal.ErrCorrupt
	}
	return nil
}

// codeOf classifies a server-side error.
func codeOf(err error) byte {
	var re *Error
	switch {
	case errors.As(err, &re):
		return re.Code
	case errors.Is(err, backend.ErrNotFound):
		return codeNotFound
	case errors.Is(err, backend.ErrExists):
		return codeExists
	case errors.Is(err, ErrDenied):
		return codeDenied
	case errors.Is(err, backend.ErrRange):
		return codeRange
	case errors.Is(err, errMalformed), errors.Is(err, ErrBadRequest):
		return codeBadRequest
	case errors.Is(err, ErrConflict):
		return codeConflict
	case errors.Is(err, journal.ErrTrimmed):
		return codeTrimmed
	case errors.Is(err, chunk.ErrMissing):
		return codeChunkMissing
	case errors.Is(err, chunk.ErrBad):
		return codeBadChunk
	case errors.Is(err, journal.ErrCorrupt):
		return codeCorrupt
	}
	return codeInternal
}

// maxErrorMessage bounds the message of an error frame: messages are for
// people, and a long one (a wrapped error naming many objects) must not
// come near the frame limit.
const maxErrorMessage = 64 << 10

// encodeError is the payload of an error frame with the message cut to
// maxErrorMessage.
func encodeError(code byte, msg string) []byte {
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage]
	}
	return encode(errorReply{Code: code, Msg: msg})
}

// decodeError turns an error frame into the client's error; a malformed
// one is still an error (internal), so a request never appears to succeed.
func decodeError(p []byte) *Error {
	r, err := decodeErrorReply(p)
	if err != nil {
		return &Error{Code: codeInternal, Msg: "malformed error frame from the store server"}
	}
	return &Error{Code: r.Code, Msg: r.Msg}
}

// denied builds a denial.
func denied(format string, args ...any) error {
	return &Error{Code: codeDenied, Msg: fmt.Sprintf(format, args...)}
}

// badRequest builds a refusal of a malformed request.
func badRequest(format string, args ...any) error {
	return &Error{Code: codeBadRequest, Msg: fmt.Sprintf(format, args...)}
}
