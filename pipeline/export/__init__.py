"""TFLite export of trained runs, each file checked in LiteRT before it is written."""
