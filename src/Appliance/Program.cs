// Entry point of the one binary: everything is a verb of the command line.
return await Portcullis.Appliance.Cli.CommandLine.RunAsync(args);
