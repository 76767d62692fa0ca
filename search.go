package unsserv

// searchOptions holds the options of NewSearch.
type searchOptions struct{}
