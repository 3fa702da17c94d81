package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// vec is a metric vector that can drop an app's series.
type vec interface {
	prometheus.Collector
	DeletePartialMatch(prometheus.Labels) int
}

// lazyVec is a vector registered on its first use, so that it lives in a
// file of its own and appears once something is counted.
type lazyVec[V vec] struct {
	mu  sync.Mutex
	vec V
	set bool
}

// get returns the vector, made by newVec and registered with reg the
// first time.
func (l *lazyVec[V]) get(reg *prometheus.Registry, newVec func() V) V {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.set {
		l.vec, l.set = newVec(), true
		reg.MustRegister(l.vec)
	}
	return l.vec
}

// forget deletes a destroyed app's series, if the vector was registered.
func (l *lazyVec[V]) forget(labels prometheus.Labels) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.set {
		l.vec.DeletePartialMatch(labels)
	}
}
