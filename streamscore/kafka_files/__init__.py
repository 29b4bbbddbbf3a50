"""The local broker's files, shipped as package data: Maven file, logging and server config."""
