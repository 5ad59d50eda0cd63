"""The pure cores of the resilience services (DESIGN 3.7): circuit breakers, token buckets, retry budgets, the error
tracker and their settings. No IO: the daemon's shell (daemon/services/resilience) owns the clock, the sockets and
the disk."""
