package unsserv

// samplingOptions holds the options of NewSampling (to come).
type samplingOptions struct{}
