using Portcullis.SmtpCore.Downstream;

namespace Portcullis.Appliance.Gateway;

// How a session reaches the mail server behind the gateway. The product connects with
// DownstreamClient as [general] smtp_server_* says; tests point it at a scripted server.
internal interface IDownstreamConnector
{
    // DownstreamException when the server cannot be reached or refuses the session.
    Task<DownstreamClient> ConnectAsync(DownstreamOptions options, CancellationToken ct);
}

internal sealed class DownstreamConnector : IDownstreamConnector
{
    public static readonly DownstreamConnector Instance = new();

    public Task<DownstreamClient> ConnectAsync(DownstreamOptions options, CancellationToken ct) =>
        DownstreamClient.ConnectAsync(options, ct);
}
