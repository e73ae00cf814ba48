package testutil

import (
	"context"
	"encoding/binary"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hotdesk/hotdesk/internal/xvfb"
)

// StartXvfb starts a virtual X screen of 1024x768x24 on a free display
// number and returns its name (":N"); it is stopped when the test ends.
// Xvfb picks the number itself (-displayfd), under its lock file: a
// number chosen here could belong to another test's X server, which
// would then answer the readiness check in this one's place.
func StartXvfb(t testing.TB) string {
	t.Helper()
	return StartXvfbs(t, 1)[0]
}

// StartXvfbs starts n screens as StartXvfb does, at once, and returns
// their names.
func StartXvfbs(t testing.TB, n int) []string {
	t.Helper()
	sizes := make([]string, n)
	for i := range sizes {
		sizes[i] = defaultScreen
	}
	return StartXvfbSizes(t, sizes...)
}

// defaultScreen is the size and depth of StartXvfb's screens.
const defaultScreen = "1024x768x24"

// StartXvfbSizes starts one screen of each size ("WxHxDEPTH"), at once,
// and returns their names.
func StartXvfbSizes(t testing.TB, sizes ...string) []string {
	t.Helper()
	NeedTools(t, "Xvfb", "xwd")
	disps := make([]string, len(sizes))
	fns := make([]func() error, len(sizes))
	for i := range fns {
		fns[i] = func() error {
			x, err := startXvfb(sizes[i])
			if err != nil {
				return err
			}
			t.Cleanup(x.Stop)
			disps[i] = x.Display
			return nil
		}
	}
	Concurrently(t, fns...)
	return disps
}

// startXvfb starts one screen of size and waits until it answers.
func startXvfb(size string) (*xvfb.Server, error) {
	x, err := xvfb.Start(context.Background(), size, nil)
	if err != nil {
		return nil, err
	}
	disp := x.Display
	deadline := time.Now().Add(10 * time.Second)
	for exec.Command("xwd", "-root", "-silent", "-display", disp).Run() != nil {
		select {
		case <-x.Exited:
			return nil, fmt.Errorf("testutil: Xvfb on %s exited", disp)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			x.Stop()
			return nil, fmt.Errorf("testutil: Xvfb on %s does not answer", disp)
		}
	}
	return x, nil
}

// Screenshot returns the whole screen of X display disp (xwd, decoded
// here: ImageMagick's conversion cost several times xwd's CPU, which
// tests polling the screen took from the tests running beside them).
func Screenshot(t testing.TB, disp string) image.Image {
	t.Helper()
	NeedTools(t, "xwd")
	out, err := exec.Command("xwd", "-root", "-silent", "-display", disp).Output()
	if err != nil {
		t.Fatalf("xwd: %v", err)
	}
	img, err := decodeXWD(out)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// decodeXWD decodes an X window dump of a TrueColor or DirectColor
// visual in ZPixmap format with 24 or 32 bits per pixel, what xwd writes
// of an Xvfb screen.
func decodeXWD(b []byte) (*image.RGBA, error) { return decodeXWDPath(b, true) }

// decodeXWDPath is decodeXWD; fast lets it take the fast path for the
// layout of an Xvfb screen of depth 24 on a little-endian machine (32 bits
// per pixel, least significant byte first, 8-bit red, green and blue
// masks), 4 bytes read and written per pixel instead of one channel at a
// time. It is not instrumented by the race detector (go:norace): it works
// on its own buffers only, and instrumented it cost a polling test ten
// times the CPU (half a second per screen).
//
//go:norace
func decodeXWDPath(b []byte, fast bool) (*image.RGBA, error) {
	const headerLen = 25 * 4 // XWDFileHeader: 25 big-endian CARD32s
	if len(b) < headerLen {
		return nil, fmt.Errorf("xwd: %d bytes; want a header of %d", len(b), headerLen)
	}
	h := func(i int) uint32 { return binary.BigEndian.Uint32(b[4*i:]) }
	var (
		headerSize, version, format  = h(0), h(1), h(2)
		width, height                = h(4), h(5)
		byteOrder, bpp, bytesPerLine = h(7), h(11), h(12)
		class                        = h(13)
		masks                        = [3]uint32{h(14), h(15), h(16)}
		ncolors                      = h(19)
	)
	switch {
	case version != 7:
		return nil, fmt.Errorf("xwd: file version %d; want 7", version)
	case format != 2: // ZPixmap
		return nil, fmt.Errorf("xwd: pixmap format %d; want ZPixmap (2)", format)
	case class != 4 && class != 5: // TrueColor, DirectColor
		return nil, fmt.Errorf("xwd: visual class %d; want TrueColor or DirectColor", class)
	case bpp != 24 && bpp != 32:
		return nil, fmt.Errorf("xwd: %d bits per pixel; want 24 or 32", bpp)
	case width == 0 || height == 0 || width > 1<<14 || height > 1<<14:
		return nil, fmt.Errorf("xwd: size %dx%d", width, height)
	case uint64(bytesPerLine) < uint64(width)*uint64(bpp/8):
		return nil, fmt.Errorf("xwd: %d bytes per line for %d pixels of %d bits", bytesPerLine, width, bpp)
	}
	data := uint64(headerSize) + 12*uint64(ncolors) // then the XWDColor entries, 12 bytes each
	if need := data + uint64(bytesPerLine)*uint64(height); uint64(len(b)) < need {
		return nil, fmt.Errorf("xwd: %d bytes; want %d", len(b), need)
	}
	var shift [3]uint
	var top [3]uint32 // a channel's largest value
	for i, m := range masks {
		if m == 0 {
			return nil, fmt.Errorf("xwd: colour mask %d is 0", i)
		}
		for m&1 == 0 {
			m >>= 1
			shift[i]++
		}
		top[i] = m
	}
	img := image.NewRGBA(image.Rect(0, 0, int(width), int(height)))
	if fast && bpp == 32 && byteOrder == 0 && masks == [3]uint32{0xff0000, 0xff00, 0xff} {
		for y := 0; y < int(height); y++ {
			row := b[data+uint64(y)*uint64(bytesPerLine):][:4*width]
			out := img.Pix[y*img.Stride:][:4*width]
			for i := 0; i < len(row); i += 4 {
				// xRGB, least significant byte first, to R G B 0xff.
				binary.BigEndian.PutUint32(out[i:], binary.LittleEndian.Uint32(row[i:])<<8|0xff)
			}
		}
		return img, nil
	}
	step := int(bpp / 8)
	for y := 0; y < int(height); y++ {
		row := b[data+uint64(y)*uint64(bytesPerLine):]
		for x := 0; x < int(width); x++ {
			p := row[x*step : x*step+step]
			var v uint32
			for i := range step {
				if byteOrder == 0 { // LSBFirst
					v |= uint32(p[i]) << (8 * i)
				} else {
					v = v<<8 | uint32(p[i])
				}
			}
			o := img.PixOffset(x, y)
			for i := range 3 {
				img.Pix[o+i] = uint8(((v & masks[i]) >> shift[i]) * 255 / top[i])
			}
			img.Pix[o+3] = 0xff
		}
	}
	return img, nil
}

// KeepShots writes each of shots (a nil one is passed over) to
// $HOTDESK_SHOTS/<name>.png, for a person to look at, when that variable
// is set; it does nothing otherwise. Failures to write are ignored: the
// pictures are not part of the test.
func KeepShots(shots map[string]image.Image) {
	dir := os.Getenv("HOTDESK_SHOTS")
	if dir == "" {
		return
	}
	for name, img := range shots {
		if img == nil {
			continue
		}
		if f, err := os.Create(filepath.Join(dir, name+".png")); err == nil {
			png.Encode(f, img)
			f.Close()
		}
	}
}
