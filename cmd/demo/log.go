package main

import (
	golog "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/gologshim"
)

// log is the demo's logger. go-log's default level is error, so the demo is quiet
// unless GOLOG_LOG_LEVEL raises it: "info" gives one line per meaningful event
// (joins, neighbour changes, relay reservations, hole punches, connections), and
// per-subsystem levels work for libp2p too, e.g.
// GOLOG_LOG_LEVEL="error,unsserv/demo=info,p2p-holepunch=debug,autorelay=debug".
var log = golog.Logger("unsserv/demo")

func init() {
	// go-libp2p logs through its slog shim; without this it writes its own JSON to
	// standard error, outside go-log's levels and format (LIBP2P-NOTES, section 5).
	// It must run before libp2p logs anything.
	gologshim.SetDefaultHandler(golog.SlogHandler())
}
