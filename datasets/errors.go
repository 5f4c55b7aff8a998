package datasets

import "errors"

// Sentinel errors. Returned errors wrap one of these and name the file (or
// input) and what is wrong; test with errors.Is.
var (
	// ErrMalformed: the bytes are not a valid file of the expected format
	// (bad magic, wrong dimensions, inconsistent counts, corrupt gzip,
	// invalid UTF-8, NUL bytes, out-of-range labels).
	ErrMalformed = errors.New("datasets: malformed data")
	// ErrTruncated: the file ends before the data its header declares.
	ErrTruncated = errors.New("datasets: truncated data")
	// ErrTooLarge: a header or file declares more data than the package's limits.
	ErrTooLarge = errors.New("datasets: data too large")
	// ErrNotFound: no file of the expected names exists.
	ErrNotFound = errors.New("datasets: file not found")
	// ErrInvalidArgument: a partition spec or parameter is out of its domain.
	ErrInvalidArgument = errors.New("datasets: invalid argument")
)

// ErrEmpty: a text file or shard holds no bytes (or a directory no .txt file
// with any).
var ErrEmpty = errors.New("datasets: empty text")
