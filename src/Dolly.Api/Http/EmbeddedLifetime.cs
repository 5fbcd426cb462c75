using Microsoft.Extensions.Hosting;

namespace Dolly.Api.Http;

/// <summary>
/// A host lifetime that ignores console signals: the embedding process (e.g. `dolly up`) owns Ctrl-C and SIGTERM
/// and calls <see cref="ApiServer.StopAsync"/>; the default console lifetime would block process exit on its own.
/// </summary>
internal sealed class EmbeddedLifetime : IHostLifetime
{
    public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
