package membership

import (
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/unsserv/go-unsserv/protocols"
)

// NeighboursChanged is emitted by a membership core whenever its set of neighbours
// changes (HyParView: the active view; Newscast: the cache). Nodes is a fresh slice the
// receiver may keep.
type NeighboursChanged struct {
	protocols.Event
	Nodes []*Node
}

// PeerID returns the node's peer ID, or "" if the ID bytes do not parse.
func (n *Node) PeerID() peer.ID {
	id, err := peer.IDFromBytes(n.GetId())
	if err != nil {
		return ""
	}
	return id
}

// NewNode returns a descriptor of id with the given record and metadata.
func NewNode(id peer.ID, record, meta []byte) *Node {
	return &Node{Id: []byte(id), Record: record, Meta: meta}
}

// cloneNode returns a deep copy, so that a descriptor kept in a view is never shared
// with a message handed to the driver.
func cloneNode(n *Node) *Node {
	return proto.Clone(n).(*Node)
}

// Descriptors lists every node descriptor the message carries (see
// protocols.DescriptorCarrier).
func (m *Message) Descriptors() []protocols.Descriptor {
	var ds []protocols.Descriptor
	add := func(ns ...*Node) {
		for _, n := range ns {
			if n != nil {
				ds = append(ds, n)
			}
		}
	}
	switch b := m.GetBody().(type) {
	case *Message_Join:
		add(b.Join.GetSender())
	case *Message_ForwardJoin:
		add(b.ForwardJoin.GetJoiner())
	case *Message_Neighbor:
		add(b.Neighbor.GetSender())
	case *Message_NeighborReply:
		add(b.NeighborReply.GetSender())
	case *Message_Shuffle:
		add(b.Shuffle.GetOrigin())
		add(b.Shuffle.GetNodes()...)
	case *Message_ShuffleReply:
		add(b.ShuffleReply.GetNodes()...)
	case *Message_Newscast:
		add(b.Newscast.GetSender())
		for _, it := range b.Newscast.GetItems() {
			add(it.GetNode())
		}
	}
	return ds
}
