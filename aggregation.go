package unsserv

// aggregationOptions holds the options of NewAggregation (to come).
type aggregationOptions struct{}
