package dissemination

//go:generate protoc --go_out=. --go_opt=paths=source_relative dissemination.proto
