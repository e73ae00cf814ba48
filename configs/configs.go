// Package configs holds the shipped sample configuration files, embedded so
// that the programs can render their reference pages (hotdesk.hcl(5)) from
// the very files that are installed. It has no code that reads or applies a
// configuration: that is cmd/hotdeskd/config.
package configs

import _ "embed"

// HotdeskHCL is configs/hotdesk.hcl: every hotdeskd setting with its
// default and its documentation in comments; installed as
// /etc/hotdesk/hotdesk.hcl.
//
//go:embed hotdesk.hcl
var HotdeskHCL string

// GroupHCL is configs/group/hotdesk.hcl: a broker of a server group with
// mTLS to a real etcd cluster.
//
//go:embed group/hotdesk.hcl
var GroupHCL string
