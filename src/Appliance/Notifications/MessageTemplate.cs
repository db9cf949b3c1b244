using System.Text;

namespace Portcullis.Appliance.Notifications;

// One template file. Placeholders are written {name} with a name from Placeholders; {{ and }} stand
// for literal braces. Any other {...} is an error, reported when the configuration is checked and at
// start-up, never at the moment a virus arrives. Values are inserted as plain text: control
// characters in them (a CR LF in a forged subject) become spaces, so a value never starts a new
// header line or adds lines of its own.
//
// Notification templates (notify_*.txt) begin with a `Subject:` line and a blank line; the rest is
// the body. attachment.txt and message.txt are bodies only.
public sealed class MessageTemplate
{
    public static readonly string[] Placeholders =
    [
        "virus", "sender", "recipients", "subject", "message_id", "client_address", "helo", "quarantine_id",
        "action", "date", "hostname", "filename",
    ];

    private readonly List<(string? Literal, string? Name)> _subject;
    private readonly List<(string? Literal, string? Name)> _body;

    private MessageTemplate(string name, List<(string?, string?)> subject, List<(string?, string?)> body)
    {
        Name = name;
        _subject = subject;
        _body = body;
    }

    public string Name { get; }

    public bool HasSubject => _subject.Count > 0;

    // Parses `text`; on problems returns null and adds one line per problem to `errors`, naming `source`.
    public static MessageTemplate? Parse(string name, string text, bool withSubject, string source, List<string> errors)
    {
        var before = errors.Count;
        text = text.Replace("\r\n", "\n");
        List<(string?, string?)> subject = [];
        if (withSubject)
        {
            var end = text.IndexOf('\n');
            var first = end < 0 ? text : text[..end];
            if (!first.StartsWith("Subject:", StringComparison.OrdinalIgnoreCase))
            {
                errors.Add($"{source}: line 1: expected a \"Subject: ...\" line, then a blank line, then the body");
                return null;
            }

            subject = Tokenize(first["Subject:".Length..].Trim(), source, 1, errors);
            var rest = end < 0 ? "" : text[(end + 1)..];
            if (rest.Length > 0 && !rest.StartsWith('\n'))
            {
                errors.Add($"{source}: line 2: expected a blank line after the Subject line");
            }

            text = rest.StartsWith('\n') ? rest[1..] : rest;
        }

        var body = Tokenize(text, source, withSubject ? 3 : 1, errors);
        return errors.Count == before ? new MessageTemplate(name, subject, body) : null;
    }

    public string RenderSubject(IReadOnlyDictionary<string, string> values) => Render(_subject, values);

    // The body with CRLF line endings.
    public string RenderBody(IReadOnlyDictionary<string, string> values) => Render(_body, values).Replace("\n", "\r\n");

    private static string Render(List<(string? Literal, string? Name)> parts, IReadOnlyDictionary<string, string> values)
    {
        var text = new StringBuilder();
        foreach (var (literal, name) in parts)
        {
            if (literal is not null)
            {
                text.Append(literal);
                continue;
            }

            foreach (var c in values.GetValueOrDefault(name!) ?? "")
            {
                text.Append(char.IsControl(c) ? ' ' : c);
            }
        }

        return text.ToString();
    }

    private static List<(string?, string?)> Tokenize(string text, string source, int firstLine, List<string> errors)
    {
        var parts = new List<(string?, string?)>();
        var literal = new StringBuilder();
        var line = firstLine;
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (c == '\n') line++;
            if (c == '{' && i + 1 < text.Length && text[i + 1] == '{')
            {
                literal.Append('{');
                i++;
            }
            else if (c == '}' && i + 1 < text.Length && text[i + 1] == '}')
            {
                literal.Append('}');
                i++;
            }
            else if (c == '{')
            {
                var close = text.IndexOf('}', i + 1);
                var newline = text.IndexOf('\n', i + 1);
                if (close < 0 || (newline >= 0 && newline < close))
                {
                    errors.Add($"{source}: line {line}: \"{{\" without a closing \"}}\" (write {{{{ for a literal brace)");
                    break;
                }

                var name = text[(i + 1)..close];
                if (!Placeholders.Contains(name, StringComparer.Ordinal))
                {
                    errors.Add($"{source}: line {line}: unknown placeholder {{{name}}} (known placeholders: {string.Join(", ", Placeholders.Select(p => "{" + p + "}"))}; write {{{{ for a literal brace)");
                }
                else
                {
                    if (literal.Length > 0) parts.Add((literal.ToString(), null));
                    literal.Clear();
                    parts.Add((null, name));
                }

                i = close;
            }
            else
            {
                literal.Append(c);
            }
        }

        if (literal.Length > 0) parts.Add((literal.ToString(), null));
        return parts;
    }
}
