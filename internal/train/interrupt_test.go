package train

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestOnInterruptCancelsAtSIGINT(t *testing.T) {
	ctx, stop := OnInterrupt(context.Background())
	defer stop()
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("SIGINT did not cancel the context")
	}
	if cause := context.Cause(ctx); !errors.Is(cause, ErrInterrupted) {
		t.Errorf("cause %v, want ErrInterrupted", cause)
	}
}

func TestOnInterruptStopReleases(t *testing.T) {
	ctx, stop := OnInterrupt(context.Background())
	stop()
	stop() // twice is harmless
	if cause := context.Cause(ctx); !errors.Is(cause, context.Canceled) || errors.Is(cause, ErrInterrupted) {
		t.Errorf("cause after stop: %v, want context.Canceled", cause)
	}
}
