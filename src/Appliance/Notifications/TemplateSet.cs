using Portcullis.Appliance.Configuration;

namespace Portcullis.Appliance.Notifications;

// The five templates, read from [notification] template_folder. A file missing there (or the whole
// folder) falls back to the copy built into the binary, which is the file shipped in
// rootfs/etc/portcullis/templates; a file that is there but wrong is an error.
public sealed class TemplateSet
{
    public const string AttachmentFile = "attachment.txt";
    public const string MessageFile = "message.txt";
    public const string NotifyAdministratorFile = "notify_administrator.txt";
    public const string NotifyRecipientsFile = "notify_recipients.txt";
    public const string NotifySenderFile = "notify_sender.txt";

    private static readonly (string File, bool WithSubject)[] Files =
    [
        (AttachmentFile, false), (MessageFile, false), (NotifyAdministratorFile, true), (NotifyRecipientsFile, true), (NotifySenderFile, true),
    ];

    private readonly Dictionary<string, MessageTemplate> _templates;

    private TemplateSet(Dictionary<string, MessageTemplate> templates, IReadOnlyList<string> builtIn)
    {
        _templates = templates;
        BuiltIn = builtIn;
    }

    // The replacement text for a removed attachment.
    public MessageTemplate Attachment => _templates[AttachmentFile];

    // The facts about the intercepted message, appended to every notification.
    public MessageTemplate Message => _templates[MessageFile];
    public MessageTemplate NotifyAdministrator => _templates[NotifyAdministratorFile];
    public MessageTemplate NotifyRecipients => _templates[NotifyRecipientsFile];
    public MessageTemplate NotifySender => _templates[NotifySenderFile];

    // Files taken from the binary because the folder did not have them.
    public IReadOnlyList<string> BuiltIn { get; }

    // ConfigException listing every problem in every file.
    public static TemplateSet Load(string folder)
    {
        var errors = new List<string>();
        var templates = new Dictionary<string, MessageTemplate>(StringComparer.Ordinal);
        var builtIn = new List<string>();
        foreach (var (file, withSubject) in Files)
        {
            var path = Path.Combine(folder, file);
            string text;
            string source;
            try
            {
                text = File.ReadAllText(path);
                source = path;
            }
            catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
            {
                text = BuiltInText(file);
                source = "built-in " + file;
                builtIn.Add(file);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                errors.Add($"{path}: cannot read the template: {e.Message}");
                continue;
            }

            if (MessageTemplate.Parse(file, text, withSubject, source, errors) is { } template)
            {
                templates[file] = template;
            }
        }

        if (errors.Count > 0)
        {
            throw new ConfigException(errors);
        }

        return new TemplateSet(templates, builtIn);
    }

    private static string BuiltInText(string file)
    {
        using var stream = typeof(TemplateSet).Assembly.GetManifestResourceStream("templates/" + file)
            ?? throw new InvalidOperationException($"the built-in template {file} is missing from the binary");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
