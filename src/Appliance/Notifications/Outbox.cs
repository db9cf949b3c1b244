using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using Portcullis.Appliance.Storage;

namespace Portcullis.Appliance.Notifications;

// Notifications waiting to be sent: <id>.eml (the message) and <id>.json (the envelope and the
// retry state), written durably, .eml first; an entry exists once its .json does. Ids sort in the
// order the notifications were queued.
public sealed class Outbox(string folder)
{
    private static long s_sequence;

    public string Folder { get; } = folder;

    public void EnsureFolder() => DurableFile.EnsureFolder(Folder);

    public OutboxEntry Add(string from, IReadOnlyList<string> recipients, byte[] message, DateTimeOffset now)
    {
        var sequence = Interlocked.Increment(ref s_sequence) % 1_000_000;
        var id = now.UtcDateTime.ToString("yyyyMMdd-HHmmss-fffffff", CultureInfo.InvariantCulture) + "-"
            + sequence.ToString("D6", CultureInfo.InvariantCulture) + "-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(2));
        var entry = new OutboxEntry { Id = id, From = from, Recipients = recipients, Created = now, NextAttempt = now };
        EnsureFolder();
        DurableFile.Write(Folder, id + ".eml", file => file.Write(message));
        Save(entry);
        return entry;
    }

    public void Save(OutboxEntry entry) =>
        DurableFile.Write(Folder, entry.Id + ".json", file => JsonSerializer.Serialize(file, entry, OutboxJson.Default.OutboxEntry));

    // Every readable entry in queue order; unreadable ones are reported through `problem` and skipped.
    public IReadOnlyList<OutboxEntry> Pending(Action<string> problem)
    {
        if (!Directory.Exists(Folder)) return [];
        var result = new List<OutboxEntry>();
        foreach (var path in Directory.EnumerateFiles(Folder, "*.json").Order(StringComparer.Ordinal))
        {
            if (Path.GetFileName(path).StartsWith('.')) continue;
            try
            {
                using var file = File.OpenRead(path);
                var entry = JsonSerializer.Deserialize(file, OutboxJson.Default.OutboxEntry);
                if (entry is null || entry.Id + ".json" != Path.GetFileName(path) || !File.Exists(MessagePath(entry.Id)))
                {
                    problem($"outbox entry {path} is incomplete or corrupt; moved aside to {path}.bad");
                    File.Move(path, path + ".bad", overwrite: true);
                    continue;
                }

                result.Add(entry);
            }
            catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
            {
                problem($"outbox entry {path} cannot be read ({e.Message}); moved aside to {path}.bad");
                try { File.Move(path, path + ".bad", overwrite: true); }
                catch (Exception inner) when (inner is IOException or UnauthorizedAccessException) { }
            }
        }

        return result;
    }

    public byte[] ReadMessage(string id) => File.ReadAllBytes(MessagePath(id));

    public void Remove(string id)
    {
        DurableFile.TryDelete(Path.Combine(Folder, id + ".json"));
        DurableFile.TryDelete(MessagePath(id));
        DurableFile.SyncFolder(Folder);
    }

    private string MessagePath(string id) => Path.Combine(Folder, id + ".eml");
}

public sealed record OutboxEntry
{
    public string Id { get; init; } = "";

    // The envelope; an empty From is the null sender <>.
    public string From { get; init; } = "";
    public IReadOnlyList<string> Recipients { get; init; } = [];
    public DateTimeOffset Created { get; init; }
    public int Attempts { get; init; }
    public DateTimeOffset NextAttempt { get; init; }
    public string LastError { get; init; } = "";
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true)]
[JsonSerializable(typeof(OutboxEntry))]
internal sealed partial class OutboxJson : JsonSerializerContext;
