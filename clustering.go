package unsserv

// clusteringOptions holds the options of NewClustering.
type clusteringOptions struct{}
