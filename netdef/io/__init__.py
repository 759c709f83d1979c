"""Files: Caffe weights (.caffemodel), and later solver states and data sources."""
