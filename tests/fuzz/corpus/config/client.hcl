datacenter = "dc1"
node_name  = "web-1"
retry_join = ["10.0.0.1"]
service {
  name = "api"
  port = 8080
  check {
    id       = "api-tcp"
    tcp      = "localhost:8080"
    interval = "10s"
  }
}
check {
  name = "mem"
  ttl  = "30s"
}
