package search

import (
	"crypto/sha256"
	"encoding/binary"
)

// bloomPositions returns the bit positions of key in a Bloom filter of bits bits with
// hashes hash functions (double hashing over SHA-256 of the key).
func bloomPositions(key string, bits, hashes int) []uint32 {
	sum := sha256.Sum256([]byte(key))
	h1 := binary.BigEndian.Uint64(sum[0:8])
	h2 := binary.BigEndian.Uint64(sum[8:16]) | 1
	ps := make([]uint32, hashes)
	for i := range ps {
		ps[i] = uint32((h1 + uint64(i)*h2) % uint64(bits))
	}
	return ps
}

func bloomAdd(f []byte, ps []uint32) {
	for _, p := range ps {
		f[p/8] |= 1 << (p % 8)
	}
}

func bloomHas(f []byte, ps []uint32) bool {
	for _, p := range ps {
		if int(p/8) >= len(f) || f[p/8]&(1<<(p%8)) == 0 {
			return false
		}
	}
	return true
}

func bloomOr(dst, src []byte) {
	for i := range min(len(dst), len(src)) {
		dst[i] |= src[i]
	}
}
