package gomlx

/*
#include "gomlx.h"
*/
import "C"

import "runtime"

// Save writes the session's cache (its tokens and KV) to a file that
// LoadSession starts a session from, in this process or another. It fails
// while a reply is streaming in the session and before anything was generated.
func (s *Session) Save(path string) error {
	var m cmem
	defer m.free()
	cp, err := m.str("path", path)
	if err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.h == nil {
		return ErrClosed
	}
	return call("gm_session_save", func() bool { return C.gm_session_save(s.h, cp) != C.GM_OK })
}

// LoadSession starts a chat session from a cache saved by Session.Save
// (checked against this model).
func (m *Model) LoadSession(path string) (*Session, error) {
	var mem cmem
	defer mem.free()
	cp, err := mem.str("path", path)
	if err != nil {
		return nil, err
	}
	var s *C.gm_session
	err = m.with(func(h *C.gm_model) error {
		return call("gm_session_load", func() bool { s = C.gm_session_load(h, cp); return s == nil })
	})
	if err != nil {
		return nil, err
	}
	sess := &Session{h: s, model: m}
	sess.cleanup = runtime.AddCleanup(sess, func(h *C.gm_session) { C.gm_session_free(h) }, s)
	return sess, nil
}

// ClearPrefixCache empties the model's prefix cache (WithPrefixCache) and
// returns the bytes it held.
func (m *Model) ClearPrefixCache() (uint64, error) {
	var n C.int64_t
	err := m.with(func(h *C.gm_model) error {
		return call("gm_model_clear_prefix_cache", func() bool { n = C.gm_model_clear_prefix_cache(h); return n < 0 })
	})
	return uint64(n), err
}
