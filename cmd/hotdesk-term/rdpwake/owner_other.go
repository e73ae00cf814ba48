//go:build !unix

package rdpwake

import "io/fs"

func ownedBySelfOrRoot(fs.FileInfo) bool { return false }
