using Microsoft.Extensions.Hosting;

namespace Dolly.Csi;

/// <summary>
/// A host lifetime that leaves console signals alone. The default console lifetime takes SIGTERM, SIGINT and
/// SIGQUIT for itself (cancelling the process's default handling) and stops only this gRPC host: a signal that
/// reached the process while `dolly up` or `dolly node` was still starting was swallowed, and the process ran
/// on without its CSI server. The embedding process owns the signals and stops the server through
/// <see cref="CsiServer.DisposeAsync"/>.
/// </summary>
internal sealed class EmbeddedLifetime : IHostLifetime
{
    public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
