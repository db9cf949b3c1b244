using System.Text.Json.Serialization;

namespace Portcullis.Appliance.Queue;

// One queued message's envelope and delivery state: <id>.json beside <id>.eml in the queue
// folder. Addresses are bare mailboxes ("" for the null sender <>). DSN parameters are kept as
// the client gave them (RFC 3461): RET and ENVID on the message, NOTIFY and ORCPT per recipient.
public sealed record QueueEntry
{
    public string Id { get; init; } = "";
    public string Sender { get; init; } = "";
    public IReadOnlyList<QueuedRecipient> Recipients { get; init; } = [];
    public string? Ret { get; init; }
    public string? EnvId { get; init; }

    // MAIL parameters the message needs from the server: BODY=8BITMIME, SMTPUTF8.
    public bool EightBitMime { get; init; }
    public bool SmtpUtf8 { get; init; }

    // The client the gateway took the message from (for XFORWARD and the logs).
    public string ClientAddress { get; init; } = "";
    public int? ClientPort { get; init; }
    public string Helo { get; init; } = "";
    public bool Extended { get; init; }
    public string? AuthUser { get; init; }

    // The message log id of the transaction that queued it (session.N).
    public string Session { get; init; } = "";

    public DateTimeOffset Arrival { get; init; }
    public long Size { get; init; }
    public int Attempts { get; init; }
    public DateTimeOffset NextAttempt { get; init; }
    public DateTimeOffset? LastAttempt { get; init; }
    public string LastReply { get; init; } = "";

    // Held by the administrator: no delivery attempts until released.
    public bool Held { get; init; }

    // The delay warning DSN went out (at most one per message).
    public bool DelayWarned { get; init; }

    [JsonIgnore]
    public IEnumerable<QueuedRecipient> Pending => Recipients.Where(r => r.State == RecipientState.Pending);
}

public sealed record QueuedRecipient
{
    public string Address { get; init; } = "";
    public string? Notify { get; init; }
    public string? OriginalRecipient { get; init; }
    public RecipientState State { get; init; } = RecipientState.Pending;
    public string LastReply { get; init; } = "";
    public DateTimeOffset? LastAttempt { get; init; }
}

public enum RecipientState
{
    Pending,
    Delivered,
    Failed,
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true,
    UseStringEnumConverter = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(QueueEntry))]
internal sealed partial class QueueJson : JsonSerializerContext;
