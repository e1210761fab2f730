package eval

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockFile is held by the run writing a folder. Two runs on one folder
// would each make the items the other has not recorded yet and record
// them twice (seen when a run stopped by SIGTERM, which finishes its
// image, overlapped the one started after it).
const lockFile = ".lock"

// lockRun takes the folder's lock for this process, or says which folder
// another run is writing. The lock goes with the process, however it
// ends; unlock releases it sooner.
func lockRun(out string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(out, lockFile), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: another lcpdiff eval is writing this run folder", out)
		}
		return nil, fmt.Errorf("%s: lock: %w", out, err)
	}
	return func() { f.Close() }, nil
}
