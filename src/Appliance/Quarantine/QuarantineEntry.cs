using System.Text.Json.Serialization;

namespace Portcullis.Appliance.Quarantine;

// The metadata file next to each quarantined message (<id>.json); property names in snake_case.
public sealed record QuarantineEntry
{
    public string Id { get; init; } = "";
    public DateTimeOffset Time { get; init; }
    public string Session { get; init; } = "";
    public string ClientAddress { get; init; } = "";
    public string Helo { get; init; } = "";

    // The envelope: MAIL FROM (empty for the null sender) and RCPT TO.
    public string Sender { get; init; } = "";
    public IReadOnlyList<string> Recipients { get; init; } = [];
    public long Size { get; init; }
    public string Virus { get; init; } = "";
    public string Action { get; init; } = "";
    public string Subject { get; init; } = "";
    public string MessageId { get; init; } = "";
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true)]
[JsonSerializable(typeof(QuarantineEntry))]
[JsonSerializable(typeof(List<QuarantineEntry>))]
internal sealed partial class QuarantineJson : JsonSerializerContext;
