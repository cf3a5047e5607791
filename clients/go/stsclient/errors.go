package stsclient

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Error is a failed STS call: the gRPC status code, the stable STS error code from the trailing metadata
// `sts-error-code`, and `retry-after-ms` where the server says when retrying may succeed. Every error the
// Client's stubs return is an *Error; status.Code(err) works on it too.
type Error struct {
	// Code is the gRPC status code.
	Code codes.Code
	// StsCode is the stable STS error code (for example "invalid_credentials"). When the server sent none
	// (transport failures, deadlines, UNIMPLEMENTED): the gRPC status name in lower case ("unavailable",
	// "deadline_exceeded", ...).
	StsCode string
	// RetryAfterMs is `retry-after-ms` in milliseconds; HasRetryAfter says whether the server sent it.
	RetryAfterMs  int64
	HasRetryAfter bool
	// Details is the status message as the server wrote it.
	Details string
	// Method is the full method path, for example "/sts.v1.SessionService/LogonUser".
	Method string
	// Trailer is the trailing metadata of the call.
	Trailer metadata.MD
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s (%s): %s", e.Method, codeName(e.Code), e.StsCode, e.Details)
}

// GRPCStatus lets status.Code, status.Convert and status.FromError read an *Error.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Details) }

// AsError returns err as an *Error when it is one (or wraps one).
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// codeNames are the canonical status names (the upper-case ones of the gRPC spec and of @grpc/grpc-js).
var codeNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN", codes.InvalidArgument: "INVALID_ARGUMENT",
	codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED", codes.OutOfRange: "OUT_OF_RANGE",
	codes.Unimplemented: "UNIMPLEMENTED", codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE",
	codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED",
}

func codeName(c codes.Code) string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return strconv.Itoa(int(c))
}

// newError builds an *Error for a status without trailers (client-side failures).
func newError(code codes.Code, details, method string) *Error {
	return &Error{Code: code, StsCode: strings.ToLower(codeName(code)), Details: details, Method: method, Trailer: metadata.MD{}}
}

// errorFrom converts what grpc-go returned (and the trailer it filled) into an *Error.
func errorFrom(err error, trailer metadata.MD, method string) *Error {
	if e, ok := AsError(err); ok {
		return e
	}
	var st *status.Status
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		st = status.New(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		st = status.New(codes.Canceled, err.Error())
	default:
		st = status.Convert(err)
	}
	e := newError(st.Code(), st.Message(), method)
	if trailer != nil {
		e.Trailer = trailer
	}
	if v := trailer.Get("sts-error-code"); len(v) > 0 && v[0] != "" {
		e.StsCode = v[0]
	}
	if v := trailer.Get("retry-after-ms"); len(v) > 0 {
		if ms, perr := strconv.ParseInt(v[0], 10, 64); perr == nil && ms >= 0 {
			e.RetryAfterMs, e.HasRetryAfter = ms, true
		}
	}
	return e
}
