package proto

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// ErrUnknownType reports a message type this package does not know, either
// in a received envelope or as a Go body type given to Encode/TypeOf.
var ErrUnknownType = errors.New("proto: unknown message type")

// Decoder limits for untrusted input; PROTOCOL.md documents them for peers.
const (
	maxNestedLevels  = 8  // envelope map, body map, and a little room for unknown fields
	maxArrayElements = 64 // Hello.Versions is the only array
	maxMapPairs      = 64
)

// Msg is one decoded message. Body is a pointer to the struct for Type,
// e.g. *Hello for TypeHello.
type Msg struct {
	Type Type
	Body any
}

// typeInfo ties a Type to its body struct and its name.
type typeInfo struct {
	name string
	rt   reflect.Type
}

var (
	types = map[Type]typeInfo{
		TypeHello:         {"hello", reflect.TypeFor[Hello]()},
		TypeWelcome:       {"welcome", reflect.TypeFor[Welcome]()},
		TypeTokenInserted: {"token_inserted", reflect.TypeFor[TokenInserted]()},
		TypeTokenRemoved:  {"token_removed", reflect.TypeFor[TokenRemoved]()},
		TypeChallenge:     {"challenge", reflect.TypeFor[Challenge]()},
		TypeProof:         {"proof", reflect.TypeFor[Proof]()},
		TypeAuthPrompt:    {"auth_prompt", reflect.TypeFor[AuthPrompt]()},
		TypeAuthAnswer:    {"auth_answer", reflect.TypeFor[AuthAnswer]()},
		TypeAttached:      {"attached", reflect.TypeFor[Attached]()},
		TypeDetached:      {"detached", reflect.TypeFor[Detached]()},
		TypeRedirect:      {"redirect", reflect.TypeFor[Redirect]()},
		TypeError:         {"error", reflect.TypeFor[Error]()},
		TypePing:          {"ping", reflect.TypeFor[Ping]()},
		TypePong:          {"pong", reflect.TypeFor[Pong]()},
		TypePair:          {"pair", reflect.TypeFor[Pair]()},
		TypePaired:        {"paired", reflect.TypeFor[Paired]()},
		TypeCardError:     {"card_error", reflect.TypeFor[CardError]()},
		TypeCancel:        {"cancel", reflect.TypeFor[Cancel]()},
		TypeAttach:        {"attach", reflect.TypeFor[Attach]()},
		TypeAttachOK:      {"attach_ok", reflect.TypeFor[AttachOK]()},
	}
	typeByGo = func() map[reflect.Type]Type {
		m := make(map[reflect.Type]Type, len(types))
		for t, ti := range types {
			m[ti.rt] = t
		}
		return m
	}()
)

// Types returns every known message type in ascending order.
func Types() []Type {
	out := make([]Type, 0, len(types))
	for t := Type(1); len(out) < len(types); t++ {
		if _, ok := types[t]; ok {
			out = append(out, t)
		}
	}
	return out
}

var (
	encMode cbor.EncMode
	// envMode decodes the envelope: unknown envelope keys are an error.
	envMode cbor.DecMode
	// bodyMode decodes bodies: unknown keys are ignored (forward compatibility).
	bodyMode cbor.DecMode
)

func init() {
	var err error
	if encMode, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic("proto: cbor enc mode: " + err.Error())
	}
	opts := StrictDecOptions(maxNestedLevels, maxArrayElements, maxMapPairs)
	if bodyMode, err = opts.DecMode(); err != nil {
		panic("proto: cbor dec mode: " + err.Error())
	}
	opts.ExtraReturnErrors = cbor.ExtraDecErrorUnknownField
	if envMode, err = opts.DecMode(); err != nil {
		panic("proto: cbor dec mode: " + err.Error())
	}
}

// StrictDecOptions are the CBOR decoding rules for untrusted input that this
// protocol and hotdesk's other framed protocols (the PAM helper's, the
// compositor control protocol) share: no duplicate map keys, indefinite
// lengths or tags; valid UTF-8 only; byte strings never decoded into
// strings; field names matched exactly; of the simple values only false,
// true and null; nesting, array elements and map pairs bounded by the given
// limits. Callers add their own rules (unknown fields) to the returned
// options.
func StrictDecOptions(maxNested, maxArray, maxMap int) cbor.DecOptions {
	return cbor.DecOptions{
		SimpleValues:       strictSimpleValues,
		DupMapKey:          cbor.DupMapKeyEnforcedAPF,
		IndefLength:        cbor.IndefLengthForbidden,
		TagsMd:             cbor.TagsForbidden,
		MaxNestedLevels:    maxNested,
		MaxArrayElements:   maxArray,
		MaxMapPairs:        maxMap,
		UTF8:               cbor.UTF8RejectInvalid,
		FieldNameMatching:  cbor.FieldNameMatchingCaseSensitive,
		ByteStringToString: cbor.ByteStringToStringForbidden,
	}
}

// strictSimpleValues accepts false, true and null, and no other simple
// value (undefined, the unassigned ones).
var strictSimpleValues = func() *cbor.SimpleValueRegistry {
	var reject []func(*cbor.SimpleValueRegistry) error
	for sv := 0; sv <= 255; sv++ {
		if sv <= 19 || sv == 23 || sv >= 32 {
			reject = append(reject, cbor.WithRejectedSimpleValue(cbor.SimpleValue(sv)))
		}
	}
	simple, err := cbor.NewSimpleValueRegistryFromDefaults(reject...)
	if err != nil {
		panic("proto: cbor simple values: " + err.Error())
	}
	return simple
}()

// envelopeOut is the encoded form of a message.
type envelopeOut struct {
	Type Type `cbor:"1,keyasint"`
	Body any  `cbor:"2,keyasint"`
}

// envelopeIn is the decoded form; pointers/raw tell "absent" from "zero".
type envelopeIn struct {
	Type *uint64         `cbor:"1,keyasint"`
	Body cbor.RawMessage `cbor:"2,keyasint"`
}

// NewBody returns a pointer to a new zero body struct for t (e.g. *Hello for
// TypeHello), or an error wrapping ErrUnknownType.
func NewBody(t Type) (any, error) {
	ti, ok := types[t]
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrUnknownType, uint16(t))
	}
	return reflect.New(ti.rt).Interface(), nil
}

// TypeOf returns the message type of body, which may be a message struct or
// a pointer to one (Hello or *Hello give TypeHello). Anything else is an
// error wrapping ErrUnknownType.
func TypeOf(body any) (Type, error) {
	rt := reflect.TypeOf(body)
	if rt == nil {
		return 0, fmt.Errorf("%w: nil body", ErrUnknownType)
	}
	if rt.Kind() == reflect.Pointer {
		rt = rt.Elem()
	}
	t, ok := typeByGo[rt]
	if !ok {
		return 0, fmt.Errorf("%w: go type %T", ErrUnknownType, body)
	}
	return t, nil
}

// Encode returns the frame payload (without length prefix) carrying body as
// a message of type t, in core deterministic CBOR. body must be the struct
// for t or a non-nil pointer to it. Encode refuses what a peer's Decode would
// refuse: invalid UTF-8 in a string, too many array elements (ErrMalformed),
// or more than MaxFrame bytes (ErrFrameTooLarge).
func Encode(t Type, body any) ([]byte, error) {
	bt, err := TypeOf(body)
	if err != nil {
		return nil, err
	}
	if bt != t {
		return nil, fmt.Errorf("%w: encode: body %T is not a %v message", ErrMalformed, body, t)
	}
	v := reflect.ValueOf(body)
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return nil, fmt.Errorf("%w: encode: nil %T body", ErrMalformed, body)
		}
		v = v.Elem()
	}
	if err := checkEncodable(t, v); err != nil {
		return nil, err
	}
	b, err := encMode.Marshal(envelopeOut{Type: t, Body: v.Interface()})
	if err != nil {
		return nil, fmt.Errorf("proto: encode %v: %w", t, err)
	}
	if len(b) > MaxFrame {
		return nil, fmt.Errorf("%w: encode %v: %d bytes, limit %d", ErrFrameTooLarge, t, len(b), MaxFrame)
	}
	return b, nil
}

// checkEncodable rejects field values the strict decoder would refuse.
func checkEncodable(t Type, v reflect.Value) error {
	rt := v.Type()
	for i := range rt.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			if !utf8.ValidString(f.String()) {
				return fmt.Errorf("%w: encode %v: field %s is not valid UTF-8", ErrMalformed, t, rt.Field(i).Name)
			}
		case reflect.Slice:
			if f.Type().Elem().Kind() != reflect.Uint8 && f.Len() > maxArrayElements {
				return fmt.Errorf("%w: encode %v: field %s has %d elements, limit %d", ErrMalformed, t, rt.Field(i).Name, f.Len(), maxArrayElements)
			}
		}
	}
	return nil
}

// Decode parses a frame payload strictly. Errors wrap ErrFrameTooLarge
// (payload over MaxFrame), ErrUnknownType (a well-formed envelope with a type
// this package does not know) or ErrMalformed (everything else: not CBOR,
// trailing bytes, duplicate keys, indefinite lengths, tags, nesting or size
// limits, missing or extra envelope keys, a body that is not a map or does
// not fit its type). On error the returned Msg is the zero value.
func Decode(payload []byte) (Msg, error) {
	switch {
	case len(payload) == 0:
		return Msg{}, fmt.Errorf("%w: empty payload", ErrMalformed)
	case len(payload) > MaxFrame:
		return Msg{}, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, len(payload), MaxFrame)
	}
	var env envelopeIn
	if err := envMode.Unmarshal(payload, &env); err != nil {
		return Msg{}, fmt.Errorf("%w: envelope: %w", ErrMalformed, err)
	}
	if env.Type == nil {
		return Msg{}, fmt.Errorf("%w: envelope has no type", ErrMalformed)
	}
	if len(env.Body) == 0 {
		return Msg{}, fmt.Errorf("%w: envelope has no body", ErrMalformed)
	}
	if *env.Type > 0xffff {
		return Msg{}, fmt.Errorf("%w: %d", ErrUnknownType, *env.Type)
	}
	t := Type(*env.Type)
	body, err := NewBody(t)
	if err != nil {
		return Msg{}, err
	}
	// Major type 5 (map); definite length is guaranteed by the decoder options.
	if env.Body[0]>>5 != 5 {
		return Msg{}, fmt.Errorf("%w: %v body is not a map", ErrMalformed, t)
	}
	if err := bodyMode.Unmarshal(env.Body, body); err != nil {
		return Msg{}, fmt.Errorf("%w: %v body: %w", ErrMalformed, t, wireTypeError(err))
	}
	if err := CheckNullElements(env.Body, body); err != nil {
		return Msg{}, fmt.Errorf("%w: %v body: %w", ErrMalformed, t, err)
	}
	return Msg{Type: t, Body: body}, nil
}

// CheckNullElements refuses a null element in an array of a known field of
// data (a CBOR map already decoded into v, a pointer to the struct with
// the fields' keyasint tags), in nested structs too: null stands for an
// absent field, and an element of an array is not a field. The CBOR
// decoder reads it as the element's zero value, so a Hello.Versions of
// [null] would offer version 0; a compositor's [null] capabilities, "".
// Unknown fields are not looked into (null is allowed there). Every
// decoder of the strict protocols (StrictDecOptions) calls it after
// decoding.
func CheckNullElements(data []byte, v any) error {
	rt := reflect.TypeOf(v)
	if !holdsArrays(rt, 0) {
		return nil // nothing to look for (most messages): no second pass
	}
	return checkNulls(data, rt)
}

// holdsArrays reports whether a value of rt may hold an array other than a
// byte string in a keyasint field (cached).
func holdsArrays(rt reflect.Type, depth int) bool {
	for rt.Kind() == reflect.Pointer {
		rt = rt.Elem()
	}
	switch rt.Kind() {
	case reflect.Slice, reflect.Array:
		return rt.Elem().Kind() != reflect.Uint8
	case reflect.Struct:
		if h, ok := arrayCache.Load(rt); ok {
			return h.(bool)
		}
		h := false
		if depth < 8 {
			for _, ft := range cborKeys(rt) {
				if holdsArrays(ft, depth+1) {
					h = true
					break
				}
			}
		}
		arrayCache.Store(rt, h)
		return h
	}
	return false
}

// isNull reports whether raw is CBOR null.
func isNull(raw []byte) bool { return len(raw) == 1 && raw[0] == 0xf6 }

// rawMode decodes what the strict decoder has already accepted into raw
// parts (map values, array elements).
var rawMode = func() cbor.DecMode {
	m, err := cbor.DecOptions{MaxNestedLevels: 64, MaxArrayElements: 1 << 16, MaxMapPairs: 1 << 16}.DecMode()
	if err != nil {
		panic("proto: cbor raw dec mode: " + err.Error())
	}
	return m
}()

func checkNulls(raw []byte, rt reflect.Type) error {
	for rt.Kind() == reflect.Pointer {
		rt = rt.Elem()
	}
	if isNull(raw) {
		return nil // an absent field, or a nil pointer
	}
	switch rt.Kind() {
	case reflect.Struct:
		keys := cborKeys(rt)
		if len(keys) == 0 {
			return nil
		}
		var m map[any]cbor.RawMessage
		if err := rawMode.Unmarshal(raw, &m); err != nil {
			return nil // not a map: the decoder has judged it already
		}
		for k, val := range m {
			key, ok := k.(uint64)
			if !ok {
				continue
			}
			f, ok := keys[key]
			if !ok {
				continue // unknown
			}
			if err := checkNulls(val, f); err != nil {
				return fmt.Errorf("field %d: %w", key, err)
			}
		}
	case reflect.Slice, reflect.Array:
		et := rt.Elem()
		if et.Kind() == reflect.Uint8 {
			return nil // a byte string
		}
		var elems []cbor.RawMessage
		if err := rawMode.Unmarshal(raw, &elems); err != nil {
			return nil
		}
		for i, e := range elems {
			if isNull(e) && et.Kind() != reflect.Pointer && et.Kind() != reflect.Interface {
				return fmt.Errorf("element %d of the array is null (null stands only for an absent field)", i)
			}
			if err := checkNulls(e, et); err != nil {
				return fmt.Errorf("element %d: %w", i, err)
			}
		}
	}
	return nil
}

// cborKeys maps the keyasint keys of struct type rt to their fields'
// types (cached).
func cborKeys(rt reflect.Type) map[uint64]reflect.Type {
	if m, ok := keyCache.Load(rt); ok {
		return m.(map[uint64]reflect.Type)
	}
	m := map[uint64]reflect.Type{}
	for i := range rt.NumField() {
		f := rt.Field(i)
		tag := f.Tag.Get("cbor")
		name, opts, _ := strings.Cut(tag, ",")
		if !strings.Contains(","+opts+",", ",keyasint,") {
			continue
		}
		if k, err := strconv.ParseUint(name, 10, 64); err == nil {
			m[k] = f.Type
		}
	}
	keyCache.Store(rt, m)
	return m
}

var (
	keyCache   sync.Map // reflect.Type → map[uint64]reflect.Type
	arrayCache sync.Map // reflect.Type → bool (holdsArrays)
)

// wireTypeError restates a CBOR type mismatch in the protocol's terms (the
// field's key and its wire type, PROTOCOL.md §5) instead of the Go
// struct and type it was decoded into, which mean nothing to a terminal's
// author; other errors are returned as they are.
func wireTypeError(err error) error {
	var te *cbor.UnmarshalTypeError
	if !errors.As(err, &te) {
		return err
	}
	field := te.StructFieldName
	if i := strings.LastIndexByte(field, '.'); i >= 0 {
		field = field[i+1:]
	}
	want := "another type"
	switch g := te.GoType; {
	case g == "string":
		want = "text"
	case g == "[]uint8":
		want = "bytes"
	case g == "bool":
		want = "a boolean"
	case intRanges[g] != "":
		want = intRanges[g]
	case strings.HasPrefix(g, "uint") || strings.HasPrefix(g, "int") || strings.HasPrefix(g, "proto."):
		want = "an integer"
	case strings.HasPrefix(g, "[]"):
		want = "an array"
	}
	if field == "" {
		return fmt.Errorf("%s where %s is expected", te.CBORType, want)
	}
	return fmt.Errorf("field %s: %s where %s is expected", field, te.CBORType, want)
}

// intRanges is the range of each integer type of a message field, by the
// name cbor reports it under (UnmarshalTypeError.GoType): an integer of the
// right CBOR type can still be out of range (300 for a uint8, -1 for any
// unsigned field), and "an integer is expected" would not say why.
var intRanges = func() map[string]string {
	m := map[string]string{}
	for _, v := range []any{uint8(0), uint16(0), uint32(0), uint64(0), int64(0),
		Type(0), PromptStyle(0), DetachReason(0), ErrorCode(0)} {
		t := reflect.TypeOf(v)
		bits := t.Bits()
		switch t.Kind() {
		case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			m[t.String()] = fmt.Sprintf("an integer from 0 to %d", ^uint64(0)>>(64-bits))
		case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			m[t.String()] = fmt.Sprintf("an integer from %d to %d", int64(-1)<<(bits-1), int64(^uint64(0)>>(65-bits)))
		}
	}
	return m
}()
