package nn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"

	"github.com/nlpodyssey/gopickle/pickle"
	"github.com/nlpodyssey/gopickle/types"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

// A pickle is a program: each global it names is a Python callable that
// unpickling calls, which is how a checkpoint can run os.system. gopickle
// never runs Python, but it would build stand-ins for any global, so that a
// hostile file would still load, with its payload looking like data. Every
// global a checkpoint names is therefore looked up here, and anything that
// is not one of the few a state dict needs is refused when the unpickler
// first meets it, before it is called or built.
//
// gopickle resolves three globals itself, without asking:
// collections.OrderedDict (allowed anyway), __builtin__.object and
// copy_reg._reconstructor. The last two only ever call the __new__ of a
// class that came through this allowlist (an argparse.Namespace, in
// protocol 0 and 1 pickles), and flattenCheckpoint refuses them if they are
// left as values.

// UnsafeGlobalError is the refusal of a pickled global outside the
// allowlist.
type UnsafeGlobalError struct{ Module, Name string }

func (e *UnsafeGlobalError) Error() string {
	return fmt.Sprintf("refusing to unpickle %s.%s: a checkpoint may only hold tensors, storages, numbers, strings and plain containers "+
		"(if it is a training checkpoint you trust, extract its state_dict with Python once)", e.Module, e.Name)
}

// storageType stands for the torch.*Storage class a persistent storage
// reference names; it fixes the dtype of the storage's bytes.
type storageType struct{ dtype torch.DType }

// pyFunc stands for an allowlisted Python function.
type pyFunc struct {
	name string
	call func(args []any) (any, error)
}

func (f *pyFunc) Call(args ...any) (any, error) {
	v, err := f.call(args)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.name, err)
	}
	return v, nil
}

// namespaceClass stands for argparse.Namespace, which Lightning checkpoints
// keep their hyper-parameters in: pickle makes one empty and fills its
// __dict__, so all it can hold is other unpickled (allowlisted) values.
type namespaceClass struct{}

type namespace struct{ attrs map[string]any }

func (namespaceClass) PyNew(args ...any) (any, error) {
	if len(args) != 0 {
		return nil, fmt.Errorf("argparse.Namespace.__new__ takes no arguments here, got %d", len(args))
	}
	return &namespace{attrs: map[string]any{}}, nil
}

func (n *namespace) PyDictSet(key, value any) error {
	k, ok := key.(string)
	if !ok {
		return fmt.Errorf("argparse.Namespace attribute named by a %T", key)
	}
	n.attrs[k] = value
	return nil
}

// allowedGlobals is everything a checkpoint may name. Deliberately absent,
// among the globals real files use: torch.storage._load_from_bytes (runs
// torch.load on nested bytes), torch._utils._rebuild_tensor_v3 and
// torch.UntypedStorage (dtypes lcpdiff has no use for),
// numpy.core.multiarray._reconstruct and _codecs.encode (numpy arrays), and
// the callback and config classes of training frameworks.
var allowedGlobals = map[string]any{
	"collections.OrderedDict":                    &types.OrderedDictClass{},
	"argparse.Namespace":                         namespaceClass{},
	"torch._utils._rebuild_tensor_v2":            &pyFunc{"torch._utils._rebuild_tensor_v2", rebuildTensorV2},
	"torch._utils._rebuild_tensor":               &pyFunc{"torch._utils._rebuild_tensor", rebuildTensor},
	"torch._utils._rebuild_parameter":            &pyFunc{"torch._utils._rebuild_parameter", rebuildParameter},
	"torch._utils._rebuild_parameter_with_state": &pyFunc{"torch._utils._rebuild_parameter_with_state", rebuildParameter},
	"torch.FloatStorage":                         storageType{torch.Float32},
	"torch.HalfStorage":                          storageType{torch.Float16},
	"torch.BFloat16Storage":                      storageType{torch.BFloat16},
	"torch.DoubleStorage":                        storageType{torch.Float64},
	"torch.LongStorage":                          storageType{torch.Int64},
	"torch.IntStorage":                           storageType{torch.Int32},
	"torch.ShortStorage":                         storageType{torch.Int16},
	"torch.CharStorage":                          storageType{torch.Int8},
	"torch.ByteStorage":                          storageType{torch.Uint8},
	"torch.BoolStorage":                          storageType{torch.Bool},
}

func findAllowedGlobal(module, name string) (any, error) {
	if v, ok := allowedGlobals[module+"."+name]; ok {
		return v, nil
	}
	return nil, &UnsafeGlobalError{Module: module, Name: name}
}

// unpickleCheckpoint runs data.pkl of a torch.save archive through the
// allowlist. storage resolves the persistent references to storage files.
func unpickleCheckpoint(data []byte, storage func(key string, dtype torch.DType, numel int64) (*pickledStorage, error)) (any, error) {
	if err := checkPickleLengths(data); err != nil {
		return nil, err
	}
	u := pickle.NewUnpickler(bytes.NewReader(data))
	u.FindClass = findAllowedGlobal
	u.PersistentLoad = func(pid any) (any, error) {
		// torch.save's zip format: ('storage', storage type, key, location, numel).
		t, ok := pid.(*types.Tuple)
		if !ok || t.Len() != 5 || t.Get(0) != "storage" {
			return nil, fmt.Errorf("persistent id %s is not a storage reference", describeValue(pid))
		}
		st, ok := t.Get(1).(storageType)
		if !ok {
			return nil, fmt.Errorf("storage reference names %s, not a storage type", describeValue(t.Get(1)))
		}
		key, ok := t.Get(2).(string)
		numel, ok2 := pickledInt(t.Get(4))
		if !ok || !ok2 {
			return nil, errors.New("storage reference has a malformed key or size")
		}
		// The location (t.Get(3), "cpu" or "cuda:0") does not matter: the
		// bytes are the same, and the Loader puts tensors where they go.
		return storage(key, st.dtype, numel)
	}
	return runUnpickler(&u)
}

// runUnpickler turns gopickle's panics on malformed input (it indexes
// without checking in places) into errors.
func runUnpickler(u *pickle.Unpickler) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("malformed pickle: %v", r)
		}
	}()
	v, err = u.Load()
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = errors.New("pickle ends before its STOP opcode")
	}
	return v, err
}

// checkPickleLengths walks the opcodes of a pickle and refuses one whose
// counted argument (a string, bytes, a long or a frame) runs past the end:
// gopickle allocates what a count asks for before reading, so a few bytes
// claiming a terabyte-long string would take the process down rather than
// fail. Past this check, no allocation is larger than the pickle itself.
func checkPickleLengths(p []byte) error {
	for i := 0; i < len(p); {
		op := p[i]
		i++
		// An opcode's argument is fixed bytes, or a count of countBytes
		// bytes followed by that many more.
		var fixed, countBytes int
		switch op {
		case '.': // STOP
			return nil
		case 'K', 'h', 'q', 0x80, 0x82: // BININT1 BINGET BINPUT PROTO EXT1
			fixed = 1
		case 'M', 0x83: // BININT2 EXT2
			fixed = 2
		case 'J', 'j', 'r', 0x84: // BININT LONG_BINGET LONG_BINPUT EXT4
			fixed = 4
		case 'G', 0x95: // BINFLOAT FRAME (whose opcodes follow it)
			fixed = 8
		case 'U', 'C', 0x8c, 0x8a: // SHORT_BINSTRING SHORT_BINBYTES SHORT_BINUNICODE LONG1
			countBytes = 1
		case 'T', 'B', 'X', 0x8b: // BINSTRING BINBYTES BINUNICODE LONG4
			countBytes = 4
		case 0x8d, 0x8e, 0x96: // BINUNICODE8 BINBYTES8 BYTEARRAY8
			countBytes = 8
		case 'I', 'L', 'F', 'S', 'V', 'P', 'g', 'p', 'c', 'i': // newline-terminated
			lines := 1
			if op == 'c' || op == 'i' { // GLOBAL and INST: module and name
				lines = 2
			}
			for range lines {
				nl := bytes.IndexByte(p[i:], '\n')
				if nl < 0 {
					return errors.New("pickle ends inside an opcode")
				}
				i += nl + 1
			}
		}
		if fixed+countBytes > len(p)-i {
			return errors.New("pickle ends inside an opcode")
		}
		var count uint64
		switch {
		case op == 0x95:
			count = binary.LittleEndian.Uint64(p[i:]) // not skipped: it is checked, then walked
		case countBytes == 1:
			count = uint64(p[i])
		case countBytes == 4:
			count = uint64(binary.LittleEndian.Uint32(p[i:]))
		case countBytes == 8:
			count = binary.LittleEndian.Uint64(p[i:])
		}
		i += fixed + countBytes
		if count > uint64(len(p)-i) {
			return fmt.Errorf("pickle opcode 0x%02x at byte %d claims %d bytes, past the end of the pickle", op, i-1-fixed-countBytes, count)
		}
		if op != 0x95 {
			i += int(count)
		}
	}
	return nil // gopickle reports the missing STOP
}

// legacyMagic is the number that pre-1.6 torch.save pickles first.
var legacyMagic, _ = new(big.Int).SetString("1950a86a20f9469cfc6c", 16)

// isLegacyTorchSave reports whether r starts the way a legacy torch.save
// file does, to tell its users what to do rather than "not a zip file".
func isLegacyTorchSave(r io.ReaderAt) bool {
	head := make([]byte, 64)
	n, _ := r.ReadAt(head, 0)
	head = head[:n]
	if checkPickleLengths(head) != nil {
		return false
	}
	u := pickle.NewUnpickler(bytes.NewReader(head))
	u.FindClass = func(module, name string) (any, error) { return nil, &UnsafeGlobalError{Module: module, Name: name} }
	v, err := runUnpickler(&u)
	magic, ok := v.(*big.Int)
	return err == nil && ok && magic.Cmp(legacyMagic) == 0
}

// rebuildTensorV2 is torch._utils._rebuild_tensor_v2(storage,
// storage_offset, size, stride, requires_grad, backward_hooks[, metadata]),
// what every tensor of a state dict pickles as. Gradient flags, hooks and
// metadata have no bearing on inference and are dropped.
func rebuildTensorV2(args []any) (any, error) {
	if len(args) != 6 && len(args) != 7 {
		return nil, fmt.Errorf("takes 6 or 7 arguments, got %d", len(args))
	}
	return newPickledTensor(args[0], args[1], args[2], args[3])
}

// rebuildTensor is the older torch._utils._rebuild_tensor(storage,
// storage_offset, size, stride).
func rebuildTensor(args []any) (any, error) {
	if len(args) != 4 {
		return nil, fmt.Errorf("takes 4 arguments, got %d", len(args))
	}
	return newPickledTensor(args[0], args[1], args[2], args[3])
}

// rebuildParameter is torch._utils._rebuild_parameter(data, requires_grad,
// backward_hooks) and its _with_state variant, which adds the Python
// attributes of the parameter: a parameter is its data here.
func rebuildParameter(args []any) (any, error) {
	if len(args) != 3 && len(args) != 4 {
		return nil, fmt.Errorf("takes 3 or 4 arguments, got %d", len(args))
	}
	t, ok := args[0].(*pickledTensor)
	if !ok {
		return nil, fmt.Errorf("data is %s, not a tensor", describeValue(args[0]))
	}
	return t, nil
}

// maxExpandBytes is how far past its storage's size a view may describe:
// a stride-0 (expanded) view repeats elements, so a file of a few bytes
// could otherwise ask for any amount of memory.
const maxExpandBytes = 1 << 20

// newPickledTensor checks a view against its storage, so that reading it
// later cannot go out of bounds.
func newPickledTensor(storage, offset, size, stride any) (*pickledTensor, error) {
	s, ok := storage.(*pickledStorage)
	if !ok {
		return nil, fmt.Errorf("storage is %s, not a storage reference", describeValue(storage))
	}
	off, ok := pickledInt(offset)
	if !ok || off < 0 {
		return nil, errors.New("storage offset is not a non-negative integer")
	}
	shape, ok1 := pickledInts(size)
	strides, ok2 := pickledInts(stride)
	if !ok1 || !ok2 || len(shape) != len(strides) {
		return nil, errors.New("size and stride are not tuples of non-negative integers of one length")
	}
	es := int64(s.dtype.Size())
	count := int64(1)
	for _, n := range shape {
		if n != 0 && count > math.MaxInt64/es/n {
			return nil, fmt.Errorf("size %v is too large", shape)
		}
		count *= n
	}
	if count > 0 {
		last := off
		for d, n := range shape {
			if strides[d] != 0 && n-1 > (math.MaxInt64-last)/strides[d] {
				return nil, fmt.Errorf("size %v with stride %v is out of range", shape, strides)
			}
			last += (n - 1) * strides[d]
		}
		if last >= s.numel {
			return nil, fmt.Errorf("view (offset %d, size %v, stride %v) reaches element %d of storage %q, which holds %d",
				off, shape, strides, last, s.key, s.numel)
		}
		if count*es > max(s.numel*es, maxExpandBytes) {
			return nil, fmt.Errorf("view of size %v expands storage %q of %d elements past %d bytes", shape, s.key, s.numel, maxExpandBytes)
		}
	}
	return &pickledTensor{storage: s, offset: off, shape: shape, stride: strides}, nil
}

// pickledInt reads a Python int (gopickle makes the ones past 64 bits
// *big.Int).
func pickledInt(v any) (int64, bool) {
	switch v := v.(type) {
	case int:
		return int64(v), true
	case *big.Int:
		if v.IsInt64() {
			return v.Int64(), true
		}
	}
	return 0, false
}

// pickledInts reads a tuple (or list) of non-negative ints.
func pickledInts(v any) ([]int64, bool) {
	var items []any
	switch v := v.(type) {
	case *types.Tuple:
		items = *v
	case *types.List:
		items = *v
	default:
		return nil, false
	}
	out := make([]int64, len(items))
	for i, x := range items {
		n, ok := pickledInt(x)
		if !ok || n < 0 {
			return nil, false
		}
		out[i] = n
	}
	return out, true
}
