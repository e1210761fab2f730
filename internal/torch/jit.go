package torch

/*
#include <stdlib.h>
#include "lcptorch.h"
*/
import "C"

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"unsafe"
)

// maxModuleOutputs bounds how many tensors one forward call may return.
const maxModuleOutputs = 16

// Module is a TorchScript module (torch.jit.script or torch.jit.trace, saved
// with torch.jit.save), loaded by libtorch's own torch::jit::load: a network
// exported from Python, such as a detector, runs without its Python code.
//
// Its methods return errors rather than panic: a module is a file the user
// brings, and one that breaks its contract is an input error, not a bug.
type Module struct {
	h      C.lt_module
	path   string
	device Device
}

// LoadModule loads the module at path onto device, in eval mode.
func LoadModule(path string, device Device) (*Module, error) {
	// libtorch's own message for a missing file names no reason.
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("torch: TorchScript module: %w", err)
	}
	// libtorch's own message for a missing device lists every backend.
	if device.Type == CUDADevice {
		if n := CUDADeviceCount(); device.Index >= n {
			return nil, fmt.Errorf("torch: TorchScript module %s: device %v: this libtorch sees %d CUDA device(s)", path, device, n)
		}
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var h C.lt_module
	if err := C.lt_jit_load(cpath, C.int(device.Type), C.int(device.Index), &h); err != nil {
		return nil, fmt.Errorf("torch: TorchScript module %s: %s", path, loadHint(takeError(err)))
	}
	m := &Module{h: h, path: path, device: device}
	runtime.SetFinalizer(m, (*Module).Close)
	return m, nil
}

// loadHint rewords torch::jit::load's messages for the two mistakes users
// make: a file that is not a zip archive at all, and a zip archive that
// torch.save wrote (a state dict) rather than torch.jit.save.
func loadHint(msg string) string {
	switch {
	case strings.Contains(msg, "failed finding central directory"), strings.Contains(msg, "failed reading zip archive"):
		return "not a TorchScript file (torch.jit.save writes a zip archive): " + msg
	case strings.Contains(msg, "constants.pkl"):
		return "a zip archive without TorchScript code (a torch.save state dict? export with torch.jit.script or torch.jit.trace, then torch.jit.save): " + msg
	}
	return msg
}

// takeError returns a shim error's message and frees it.
func takeError(err C.lt_error) string {
	msg := C.GoString(err)
	C.lt_error_free(err)
	return msg
}

// Path is the file the module was loaded from.
func (m *Module) Path() string { return m.path }

// Device is where the module's parameters live; its inputs must be there too.
func (m *Module) Device() Device { return m.device }

// Close releases the module. It is safe to call twice.
func (m *Module) Close() {
	if m.h != nil {
		C.lt_jit_free(m.h)
		m.h = nil
		runtime.SetFinalizer(m, nil)
	}
}

// Forward calls the module's forward method on inputs, with autograd off,
// and returns its output tensors: one for a tensor result, one per element
// for a tuple or list of tensors. They belong to the current scope, like
// any op's result.
func (m *Module) Forward(inputs ...*Tensor) (outs []*Tensor, err error) {
	if m.h == nil {
		return nil, fmt.Errorf("torch: TorchScript module %s: forward on a closed module", m.path)
	}
	hs, in := handleArray(inputs)
	var out [maxModuleOutputs]C.lt_tensor
	var n C.int
	cerr := C.lt_jit_forward(m.h, in, C.int(len(hs)), &out[0], C.int(len(out)), &n)
	runtime.KeepAlive(m)
	runtime.KeepAlive(inputs)
	if cerr != nil {
		parts := make([]string, len(inputs))
		for i, t := range inputs {
			parts[i] = t.describe()
		}
		return nil, fmt.Errorf("torch: TorchScript module %s: forward(%s): %s", m.path, strings.Join(parts, ", "), takeError(cerr))
	}
	return wrapAll(out[:n]), nil
}
