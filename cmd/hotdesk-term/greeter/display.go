//go:build !nogreeter

package greeter

/*
#cgo LDFLAGS: -lX11
#include <stdlib.h>
#include <X11/Xlib.h>

static int screen_size(const char *name, int *w, int *h) {
	Display *d = XOpenDisplay(name);
	if (d == NULL) return -1;
	int s = DefaultScreen(d);
	*w = DisplayWidth(d, s);
	*h = DisplayHeight(d, s);
	XCloseDisplay(d);
	return 0;
}
*/
import "C"

import (
	"os"
	"unsafe"
)

// displayAvailable reports whether an X11 or Wayland display is named.
func displayAvailable() bool {
	return os.Getenv("DISPLAY") != "" || os.Getenv("WAYLAND_DISPLAY") != ""
}

// x11ScreenSize returns the size in pixels of $DISPLAY's default screen,
// or ok false without an X display. A kiosk X server has no window
// manager to honour a full-screen request, so the greeter sizes its
// window to the screen itself.
func x11ScreenSize() (w, h int, ok bool) {
	name := os.Getenv("DISPLAY")
	if name == "" {
		return 0, 0, false
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var cw, ch C.int
	if C.screen_size(cname, &cw, &ch) != 0 {
		return 0, 0, false
	}
	return int(cw), int(ch), true
}
