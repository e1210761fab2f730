package nn

import (
	"fmt"
	"math/big"
	"strconv"

	"github.com/nlpodyssey/gopickle/types"
)

// Bounds on the walk of an unpickled object: a pickle can make a structure
// hold itself (which never ends) or share one list between two others at
// each of many levels (which visits 2^levels nodes).
const (
	maxPickleDepth = 1000
	maxPickleNodes = 1 << 24
)

// flattenCheckpoint names the tensors of an unpickled checkpoint as the
// Pickle doc describes, and refuses any value no allowlisted global could
// have made.
func flattenCheckpoint(root any) (map[string]*pickledTensor, error) {
	entries, ok := dictEntries(root)
	if !ok {
		return nil, fmt.Errorf("the checkpoint holds %s, not a dict of tensors", describeValue(root))
	}
	fl := &flattener{out: map[string]*pickledTensor{}}
	var holders []types.DictEntry // the top-level entries that hold tensors
	for _, e := range entries {
		before := len(fl.out)
		if err := fl.entry(e, "", true, 1); err != nil {
			return nil, err
		}
		if len(fl.out) > before {
			holders = append(holders, e)
		}
	}
	if len(holders) == 1 {
		k, _ := holders[0].Key.(string)
		if _, isDict := dictEntries(holders[0].Value); isDict && (k == "state_dict" || k == "model") {
			inner := &flattener{out: map[string]*pickledTensor{}}
			if err := inner.walk(holders[0].Value, "", true, 1); err != nil {
				return nil, err
			}
			return inner.out, nil
		}
	}
	return fl.out, nil
}

type flattener struct {
	out   map[string]*pickledTensor
	nodes int
}

// walk records the tensors under v, which sits at path, unless they are
// not addressable (reached through a set, a Namespace or an odd dict key).
func (fl *flattener) walk(v any, path string, addressable bool, depth int) error {
	if fl.nodes++; fl.nodes > maxPickleNodes {
		return fmt.Errorf("the checkpoint holds more than %d values", maxPickleNodes)
	}
	if depth > maxPickleDepth {
		return fmt.Errorf("%s: nested more than %d deep (does it contain itself?)", atPath(path), maxPickleDepth)
	}
	switch v := v.(type) {
	case nil, bool, int, float64, string, []byte, *big.Int, *types.ByteArray, *pickledStorage:
		return nil
	case *pickledTensor:
		if !addressable {
			return nil
		}
		if _, dup := fl.out[path]; dup {
			return fmt.Errorf("two tensors are named %q", path)
		}
		fl.out[path] = v
		return nil
	case *types.List:
		return fl.items(*v, path, addressable, depth)
	case *types.Tuple:
		return fl.items(*v, path, addressable, depth)
	case *types.Set:
		for x := range *v {
			if err := fl.walk(x, path, false, depth+1); err != nil {
				return err
			}
		}
		return nil
	case *types.FrozenSet:
		for x := range *v {
			if err := fl.walk(x, path, false, depth+1); err != nil {
				return err
			}
		}
		return nil
	case *namespace:
		for _, x := range v.attrs {
			if err := fl.walk(x, path, false, depth+1); err != nil {
				return err
			}
		}
		return nil
	case *types.ObjectClass:
		return &UnsafeGlobalError{Module: "__builtin__", Name: "object"}
	case *types.Reconstructor:
		return &UnsafeGlobalError{Module: "copy_reg", Name: "_reconstructor"}
	}
	if entries, ok := dictEntries(v); ok {
		for _, e := range entries {
			if err := fl.entry(e, path, addressable, depth); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("%s: %s is not data", atPath(path), describeValue(v))
}

func (fl *flattener) items(items []any, path string, addressable bool, depth int) error {
	for i, x := range items {
		if err := fl.walk(x, joinKey(path, strconv.Itoa(i)), addressable, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// entry walks one dict entry; keys are checked as values too, since any
// unpickled value can be a key.
func (fl *flattener) entry(e types.DictEntry, path string, addressable bool, depth int) error {
	if err := fl.walk(e.Key, path, false, depth+1); err != nil {
		return err
	}
	var name string
	switch k := e.Key.(type) {
	case string:
		name = k
	case int:
		name = strconv.Itoa(k)
	case *big.Int:
		name = k.String()
	default:
		addressable = false
	}
	return fl.walk(e.Value, joinKey(path, name), addressable, depth+1)
}

// dictEntries lists the entries of a dict or OrderedDict, in order.
func dictEntries(v any) ([]types.DictEntry, bool) {
	switch v := v.(type) {
	case *types.Dict:
		return *v, true
	case *types.OrderedDict:
		entries := make([]types.DictEntry, 0, v.Len())
		for el := v.List.Front(); el != nil; el = el.Next() {
			e := el.Value.(*types.OrderedDictEntry)
			entries = append(entries, types.DictEntry{Key: e.Key, Value: e.Value})
		}
		return entries, true
	}
	return nil, false
}

func joinKey(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// atPath locates a value in an error; a path that deep nesting made long
// is cut short.
func atPath(path string) string {
	if path == "" {
		return "at the top level"
	}
	if len(path) > 60 {
		path = path[:60] + "..."
	}
	return fmt.Sprintf("at %q", path)
}

// describeValue names the kind of an unpickled value in an error, without
// printing it (it may be large, or made to mislead).
func describeValue(v any) string {
	switch v := v.(type) {
	case nil:
		return "None"
	case *pickledTensor:
		return "a tensor"
	case *pickledStorage:
		return "a storage"
	case storageType:
		return "a storage type"
	case *pyFunc:
		return "the function " + v.name
	case namespaceClass:
		return "the class argparse.Namespace"
	case *types.OrderedDictClass:
		return "the class collections.OrderedDict"
	case *types.ObjectClass:
		return "the class __builtin__.object"
	case *types.Reconstructor:
		return "the function copy_reg._reconstructor"
	case *types.Dict, *types.OrderedDict:
		return "a dict"
	case *types.List:
		return "a list"
	case *types.Tuple:
		return "a tuple"
	case string:
		return "a string"
	case int, *big.Int:
		return "an int"
	case float64:
		return "a float"
	case bool:
		return "a bool"
	}
	return fmt.Sprintf("a value of Go type %T", v)
}
