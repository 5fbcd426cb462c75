// The NBD tests drive Linux programs (libnbd, qemu-img, nbdfuse, loop devices) and unix sockets.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
